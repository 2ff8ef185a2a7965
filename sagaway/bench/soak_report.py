"""The end-of-soak report: the load it ran, latency over time, growth per hour. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sagaway.bench.growth import GrowthRule, SeriesSummary, format_growth_table
from sagaway.bench.pacing import PaceTally, windows
from sagaway.bench.workload import TERMINAL_STATUSES


@dataclass(frozen=True)
class Sample:
    """Every figure read at one moment.

    Attributes:
        t_s: Seconds since the steady load began.
        values: Series name → value.
    """

    t_s: float
    values: Mapping[str, float]


def series_of(samples: Sequence[Sample]) -> dict[str, list[tuple[float, float]]]:
    """The samples, series by series: name → ``(t_s, value)`` in time order."""
    series: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        for name, value in sample.values.items():
            series.setdefault(name, []).append((sample.t_s, value))
    return series


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """How the steady rate was chosen.

    Attributes:
        sagas_per_s: Measured capacity (None: the rate was given).
        clients: Clients of the closed-loop burst.
        seconds: Length of the burst.
        fraction: Share of the capacity the steady load runs at.
    """

    sagas_per_s: float | None
    clients: int = 0
    seconds: float = 0.0
    fraction: float = 0.5


@dataclass(frozen=True, kw_only=True)
class SoakResult:
    """A finished soak.

    Attributes:
        rate: Orders per second of the steady load.
        seconds: How long orders were placed.
        max_in_flight: Most sagas waited for at once.
        sample_s: Time between two samples.
        capacity: How the rate was chosen.
        pace: What the steady load did.
        samples: Every sample, in time order.
        summaries: One per series.
        rule: When growth is flagged.
        warmup_s: Samples before this were left out of the fits.
        retention_s: How long outbox and inbox rows are kept (``outbox``, ``inbox``).
        restarts: Processes found again after they were gone, and how often.
        exited: Processes named by pid that went away.
        sample_errors: Figures that could not be read, and how often.
        out: Where the samples were written.
        problems: Broken saga invariants (None: not checked).
        autovacuum: Whether PostgreSQL's autovacuum is on (None: not known).
    """

    rate: float
    seconds: float
    max_in_flight: int
    sample_s: float
    capacity: Capacity
    pace: PaceTally
    samples: Sequence[Sample]
    summaries: Sequence[SeriesSummary]
    rule: GrowthRule
    warmup_s: float
    retention_s: Mapping[str, float]
    restarts: Mapping[str, int] = field(default_factory=dict)
    exited: Sequence[str] = ()
    sample_errors: Counter[str] = field(default_factory=Counter)
    out: Path | None = None
    problems: list[str] | None = None
    autovacuum: bool | None = None

    @property
    def growing(self) -> list[str]:
        """The series flagged as growing."""
        return [s.name for s in self.summaries if s.flagged]


def format_soak_report(result: SoakResult) -> str:
    """The report, one fact per line, then the growth table."""
    pace = result.pace
    outcomes = Counter(s.outcome.status for s in pace.sagas)
    lines = [_load_line(result)]
    ended = "  ".join(f"{status} {outcomes.get(status, 0)}" for status in TERMINAL_STATUSES)
    lines.append(
        f"placed {pace.placed}: {ended}  timeout {outcomes.get('timeout', 0)}  "
        f"http_error {outcomes.get('http_error', 0)}  behind {pace.behind} "
        f"(due while {result.max_in_flight} were in flight: not placed)"
    )
    throughput = pace.finished / result.seconds if result.seconds else 0.0
    lines.append(
        f"throughput: {throughput:.1f} sagas/s ended (target {result.rate:.1f}); "
        f"the client placed orders at most {pace.max_lag_s * 1000:.0f} ms after they were due"
    )
    if pace.tally.http_errors:
        detail = ", ".join(f"{k} x{n}" for k, n in sorted(pace.tally.http_errors.items()))
        lines.append(f"http errors: {detail}")
    lines.append("latency due->terminal by quarter of the load (ms):")
    for window in windows(pace.sagas, seconds=result.seconds):
        span = f"  {window.start_s:6.0f}-{window.end_s:<6.0f}s"
        if window.stats is None:
            lines.append(f"{span}  no saga ended")
            continue
        s = window.stats
        failed = f"  failed {window.failed}" if window.failed else ""
        lines.append(
            f"{span}  n {s.count:<6}  p50 {s.p50:7.1f}  p99 {s.p99:7.1f}  max {s.max:7.1f}{failed}"
        )
    lines.append(_processes_line(result))
    lines.append(
        f"samples: {len(result.samples)}, every {result.sample_s:g} s; the fits leave out "
        f"the warm-up before {result.warmup_s:.0f} s"
        + (f"; written to {result.out}" if result.out else "")
    )
    if result.sample_errors:
        detail = ", ".join(f"{k} x{n}" for k, n in sorted(result.sample_errors.items()))
        lines.append(f"could not read: {detail}")
    lines += ["", format_growth_table(result.summaries), ""]
    lines.append(f"rule: {result.rule.describe()}.")
    outbox_s, inbox_s = result.retention_s["outbox"], result.retention_s["inbox"]
    lines.append(
        f"expected growth: outbox rows are kept {outbox_s:g} s after they are published and "
        f"inbox rows {inbox_s:g} s (SAGAWAY_OUTBOX_RETENTION_S, SAGAWAY_INBOX_RETENTION_S as "
        f"this shell sees them), so they and their tables grow until then and are judged "
        f"on the samples after it (+{result.rule.settle_s:g} s for the janitor); sagas "
        f"that ended and the other tables are kept by design and grow with every saga."
    )
    if result.autovacuum is False:
        lines.append(
            "autovacuum is OFF on this PostgreSQL: the janitor deletes outbox and inbox rows "
            "but nothing reclaims their space, so those tables grow on disk (and their dead "
            "rows pile up) while their row counts stay bounded; VACUUM them, or turn it on."
        )
    lines.append(_verdict(result))
    return "\n".join(lines)


def soak_exit_code(result: SoakResult) -> int:
    """0 when nothing grows, no saga failed, none fell behind and the invariants hold."""
    troubled = result.growing or result.problems or result.pace.failed or result.pace.behind
    return 1 if troubled else 0


def _load_line(result: SoakResult) -> str:
    capacity = result.capacity
    minutes = result.seconds / 60
    if capacity.sagas_per_s is None:
        return f"soak: {minutes:.1f} min at {result.rate:.1f} sagas/s (rate given)"
    return (
        f"soak: {minutes:.1f} min at {result.rate:.1f} sagas/s, {capacity.fraction:.0%} of the "
        f"{capacity.sagas_per_s:.1f} sagas/s measured (closed loop, {capacity.clients} "
        f"clients, {capacity.seconds:g} s)"
    )


def _processes_line(result: SoakResult) -> str:
    restarts = ", ".join(f"{name} x{n}" for name, n in sorted(result.restarts.items()))
    exited = f"; exited: {', '.join(result.exited)}" if result.exited else ""
    return f"process restarts: {restarts or 'none'}{exited}"


def _verdict(result: SoakResult) -> str:
    growing = result.growing
    if growing:
        return f"verdict: {len(growing)} series GROWING: {', '.join(growing)}"
    return "verdict: nothing grows without bound"
