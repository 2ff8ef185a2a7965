"""Engine construction and the one helper that creates the database if it is missing."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from sagaway.outbox import db_metrics as metrics
from sagaway.outbox.settings import redact_url

log = structlog.get_logger(__name__)


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Build the async engine one process shares.

    No pre-ping: it costs a round trip on every checkout. A connection the server
    closed (a restart, a crash, a failover) is replaced on checkout anyway, at no cost
    (see :func:`discard_closed_connections`); one that dies mid-statement fails with an
    error every caller treats as transient (the transaction is retried, the message
    held, the request answered 503). No overflow either: connections beyond the pool
    would be opened and closed under load, which costs more than waiting for a pooled
    one.

    The engine counts its statements, transactions and round trips in the
    ``sagaway_db_*`` metrics (see :func:`count_round_trips`).
    """
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=30,
        pool_recycle=1800,
        connect_args={"timeout": 10},
    )
    count_round_trips(engine.sync_engine)
    discard_closed_connections(engine.sync_engine)
    return engine


def discard_closed_connections(engine: Engine) -> None:
    """Replace, on checkout, a pooled connection the server has closed meanwhile.

    When PostgreSQL restarts or crashes it closes every client connection; asyncpg
    notices the closed socket by itself, while the connection sits idle in the pool.
    Without this check the first statement on each such connection would fail after the
    server is back (one 503, one held message per process), and the error would tell
    the pool to drop the rest. It asks the driver, not the server: no round trip.
    """
    event.listen(engine, "checkout", _refuse_closed)


def _refuse_closed(dbapi_connection: Any, _record: object, _proxy: object) -> None:
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        # The pool invalidates this one connection and checks out a fresh one.
        raise DisconnectionError("connection closed by the server")


# Set in a connection's ``info`` once its transaction has sent a statement, that is once
# the driver has sent BEGIN for it.
_OPEN = "sagaway_tx_open"


def count_round_trips(engine: Engine) -> None:
    """Count ``engine``'s statements, transactions and round trips in
    :mod:`sagaway.outbox.db_metrics`.

    The asyncpg driver sends BEGIN just before a transaction's first statement and
    COMMIT or ROLLBACK only when one was sent, so that is when they are counted: a
    transaction that never ran a statement costs no round trip and is not counted. A
    connection in autocommit sends neither. Prepared-statement cache misses (one more
    round trip the first time a connection sees a statement) are invisible from here.
    """
    event.listen(engine, "begin", _on_begin)
    event.listen(engine, "before_cursor_execute", _on_statement)
    event.listen(engine, "commit", _on_commit)
    event.listen(engine, "rollback", _on_rollback)


def _on_begin(conn: Connection) -> None:
    conn.info[_OPEN] = False


def _on_statement(conn: Connection, *_: Any) -> None:
    metrics.DB_STATEMENTS.inc()
    if conn.info.get(_OPEN) is False and not _autocommit(conn):
        conn.info[_OPEN] = True
        metrics.DB_ROUND_TRIPS.inc(2)  # BEGIN, then the statement
    else:
        metrics.DB_ROUND_TRIPS.inc()


def _on_commit(conn: Connection) -> None:
    if not conn.invalidated and conn.info.pop(_OPEN, False):
        metrics.DB_COMMITS.inc()
        metrics.DB_ROUND_TRIPS.inc()


def _on_rollback(conn: Connection) -> None:
    # A connection lost mid-transaction sends no ROLLBACK, and its ``info`` may no
    # longer be read: asking for it raises instead of letting the rollback finish.
    if not conn.invalidated and conn.info.pop(_OPEN, False):
        metrics.DB_ROLLBACKS.inc()
        metrics.DB_ROUND_TRIPS.inc()


def _autocommit(conn: Connection) -> bool:
    # The driver connection knows, however autocommit was asked for (engine or
    # connection execution options, or a driver setting).
    return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (we read them to build replies)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ensure_database(database_url: str) -> bool:
    """Create the database named in ``database_url`` if it does not exist.

    Returns True when it was created. Connects to the ``postgres`` maintenance
    database with the same credentials, as ``createdb`` does.
    """
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("SAGAWAY_DATABASE_URL names no database")
    conn = await raw_connect(database_url, database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        # CREATE DATABASE cannot take a bind parameter; quote the identifier ourselves.
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            # Another process won the race (which of the two errors depends on when
            # the catalog noticed); the database exists, and that is all we need.
            return False
        log.info("database created", database=name, url=redact_url(str(url)))
        return True
    finally:
        await conn.close()


async def raw_connect(database_url: str, *, database: str | None = None) -> asyncpg.Connection:
    """A plain asyncpg connection (for LISTEN, or the maintenance database)."""
    url = make_url(database_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    # asyncpg takes ``ssl`` as a keyword, not a query argument; pass it through so a
    # TLS-only server works here too.
    ssl = url.query.get("ssl")
    url = url.difference_update_query(["ssl"])
    return await asyncpg.connect(
        url.render_as_string(hide_password=False),
        timeout=10,
        **({"ssl": ssl} if isinstance(ssl, str) else {}),
    )
