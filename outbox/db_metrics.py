"""Prometheus metrics of a process's database traffic, counted by the process itself.

Every engine built by :func:`sagaway.outbox.database.create_engine` counts what it sends, so
each component's ``/metrics`` shows its own PostgreSQL cost next to its CPU
(``process_cpu_seconds_total``): operators see it, and ``sagaway bench`` divides it by
the sagas of a run. No label carries statement text: a counter increment per statement
is all the hot path pays.
"""

from __future__ import annotations

from prometheus_client import Counter

DB_STATEMENTS = Counter(
    "sagaway_db_statements_total",
    "Statements sent to PostgreSQL (an executemany counts once).",
)
DB_TRANSACTIONS = Counter(
    "sagaway_db_transactions_total",
    "Transactions that reached PostgreSQL (at least one statement), by how they ended.",
    ["outcome"],  # commit, rollback
)
DB_ROUND_TRIPS = Counter(
    "sagaway_db_round_trips_total",
    "Client-server round trips as SQLAlchemy sees them: statements, BEGIN, COMMIT, ROLLBACK.",
)
DB_COMMITS = DB_TRANSACTIONS.labels("commit")
DB_ROLLBACKS = DB_TRANSACTIONS.labels("rollback")
