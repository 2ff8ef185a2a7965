"""What a saga costs: counters of every process before and after a run, divided per saga.

Pure: :func:`usage_of` reads one scrape, :func:`cost_rows` diffs two snapshots, and
:func:`format_cost` prints the block; :mod:`sagaway.bench.meter` takes the snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from sagaway.bench.scrape import MetricSamples

# The counters each component exposes (see sagaway/metrics.py and outbox/metrics.py).
CPU = "process_cpu_seconds_total"
STATEMENTS = "sagaway_db_statements_total"
TRANSACTIONS = "sagaway_db_transactions_total"
ROUND_TRIPS = "sagaway_db_round_trips_total"
PUBLISHED = "sagaway_outbox_published_total"
CONSUMED = "sagaway_messages_consumed_total"


@dataclass(frozen=True)
class Usage:
    """Cumulative counters of one process (or their increase over a run).

    A field is None when the process does not expose it (PostgreSQL has no statement
    counter of ours; a process that never published has no publish sample).
    """

    cpu_s: float | None = None
    statements: float | None = None
    transactions: float | None = None
    rollbacks: float | None = None
    round_trips: float | None = None
    publishes: float | None = None
    deliveries: float | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f: _add(getattr(self, f), getattr(other, f)) for f in _FIELDS})

    def __sub__(self, other: Usage) -> Usage:
        return Usage(**{f: _sub(getattr(self, f), getattr(other, f)) for f in _FIELDS})


_FIELDS = tuple(f.name for f in fields(Usage))


def usage_of(samples: MetricSamples) -> Usage:
    """The counters of one component's scrape.

    Deliveries are the messages its consumers finished with, whatever became of them
    (those dead-lettered on arrival included). A consumer that exists but has taken
    nothing yet has no sample: it counts 0 as soon as the process is a sagaway
    component (it has the statement counter).
    """
    component = samples.total(STATEMENTS) is not None
    zero = 0.0 if component else None
    return Usage(
        cpu_s=samples.total(CPU),
        statements=samples.total(STATEMENTS),
        transactions=samples.total(TRANSACTIONS) if component else None,
        rollbacks=_or(samples.total(TRANSACTIONS, outcome="rollback"), zero),
        round_trips=samples.total(ROUND_TRIPS),
        publishes=_or(samples.total(PUBLISHED), zero),
        deliveries=_or(samples.total(CONSUMED), zero),
    )


@dataclass(frozen=True)
class Snapshot:
    """Every process's counters at one moment.

    Attributes:
        components: Usage by component name (instances of one name added up); None when
            one of its ``/metrics`` could not be read.
        processes: CPU seconds by process group read from ``/proc``; None when not seen.
        backends: CPU seconds of each PostgreSQL backend serving the database under
            test, by pid; None when not known.
    """

    components: Mapping[str, Usage | None]
    processes: Mapping[str, float | None]
    backends: Mapping[int, float] | None = None


@dataclass(frozen=True)
class BackendCost:
    """What the PostgreSQL backends of the database under test used over a run.

    Attributes:
        database: The database's name.
        cpu_s: Their CPU seconds over the run.
        processes: How many of them there were at the end.
    """

    database: str
    cpu_s: float
    processes: int


def backend_cost(before: Snapshot, after: Snapshot, database: str) -> BackendCost | None:
    """The backends' CPU between two snapshots: each backend's increase (all of it for a
    backend that started during the run); a backend gone by the end is not counted."""
    if before.backends is None or after.backends is None:
        return None
    cpu_s = sum(s - before.backends.get(pid, 0.0) for pid, s in after.backends.items())
    return BackendCost(database=database, cpu_s=cpu_s, processes=len(after.backends))


@dataclass(frozen=True)
class CostRow:
    """One line of the cost block: what a process used over the run (None: unknown)."""

    name: str
    usage: Usage | None


def cost_rows(before: Snapshot, after: Snapshot) -> list[CostRow]:
    """What each process used between two snapshots, components first.

    A component whose counters went down (it restarted during the run) is unknown.
    """
    rows = [
        CostRow(name, _delta(before.components.get(name), usage))
        for name, usage in after.components.items()
    ]
    for name, cpu_s in after.processes.items():
        start = before.processes.get(name)
        cpu = Usage(cpu_s=cpu_s) if cpu_s is not None else None
        rows.append(CostRow(name, _delta(Usage(cpu_s=start) if start is not None else None, cpu)))
    return rows


def format_cost(
    rows: Sequence[CostRow],
    *,
    sagas: int,
    client_cpu_s: float | None = None,
    cores: int = 0,
    backends: BackendCost | None = None,
) -> str:
    """The cost block: a line per process and a total, every figure per saga.

    Args:
        rows: What each process used over the run (see :func:`cost_rows`).
        sagas: The sagas the run finished (the divisor).
        client_cpu_s: The bench client's own CPU over the run, shown apart.
        cores: CPU cores of the machine, for the CPU-bound ceiling line (0: no line).
        backends: The share of the database under test in PostgreSQL's CPU, if known.

    Returns:
        The block, without a trailing newline.
    """
    if sagas <= 0:
        return "cost per saga: n/a (no saga finished)"
    header = (
        f"{'per saga':<14}{'CPU ms':>9}{'statements':>12}{'transactions':>14}"
        f"{'rollbacks':>11}{'round trips':>13}{'publishes':>11}{'deliveries':>12}"
    )
    lines = [f"cost per saga ({sagas} finished sagas; counters diffed over the run):", header]
    total = Usage()
    unknown: list[str] = []
    for row in rows:
        if row.usage is None:
            unknown.append(row.name)
            lines.append(f"{row.name:<14}{'n/a':>9}")
            continue
        total = total + row.usage
        lines.append(_line(row.name, row.usage, sagas))
    lines.append(_line("total", total, sagas))
    if unknown:
        lines.append(f"n/a (not in the total): {', '.join(unknown)}")
    if backends is not None:
        lines.append(
            f"of postgres: {backends.cpu_s * 1000 / sagas:.2f} ms in the {backends.processes} "
            f"backends of database {backends.database} (the rest: the server's own "
            "processes, autovacuum, other databases)"
        )
    lines.append(
        f"AMQP per saga: {_fmt(total.publishes, sagas, 2)} publishes, "
        f"{_fmt(total.deliveries, sagas, 2)} deliveries"
    )
    if client_cpu_s is not None:
        lines.append(
            f"bench client CPU: {client_cpu_s * 1000 / sagas:.2f} ms per saga (not in the total)"
        )
    if cores and total.cpu_s:
        cpu_ms = total.cpu_s * 1000 / sagas
        lines.append(
            f"CPU-bound ceiling: {cores} cores / {cpu_ms:.2f} ms = "
            f"{cores * 1000 / cpu_ms:.1f} sagas/s (bench client excluded)"
        )
    return "\n".join(lines)


def _line(name: str, usage: Usage, sagas: int) -> str:
    cpu = _fmt(None if usage.cpu_s is None else usage.cpu_s * 1000, sagas, 2)
    return (
        f"{name:<14}{cpu:>9}{_fmt(usage.statements, sagas):>12}"
        f"{_fmt(usage.transactions, sagas):>14}{_fmt(usage.rollbacks, sagas):>11}"
        f"{_fmt(usage.round_trips, sagas):>13}{_fmt(usage.publishes, sagas):>11}"
        f"{_fmt(usage.deliveries, sagas):>12}"
    )


def _fmt(value: float | None, sagas: int, digits: int = 2) -> str:
    return "-" if value is None else f"{value / sagas:.{digits}f}"


def _delta(before: Usage | None, after: Usage | None) -> Usage | None:
    if before is None or after is None:
        return None
    delta = after - before
    if any(v is not None and v < 0 for v in (getattr(delta, f) for f in _FIELDS)):
        return None
    return delta


def _add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else a + b


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _or(value: float | None, default: float | None) -> float | None:
    return default if value is None else value
