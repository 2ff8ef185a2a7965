"""Growth per hour of the series a soak samples, what it means, and the table. Pure.

A series is a list of ``(seconds since the steady load began, value)``. Its growth per
hour is the least-squares slope over the samples after a warm-up, times 3600. Whether
that growth is a problem depends on what the series is expected to do (:class:`Kind`):

- ``bounded``: memory, descriptors, threads, connections, backlogs, queue depths and
  sagas in flight should level off under a steady load; growth is flagged.
- ``retained``: outbox and inbox rows (and their tables' size) are kept for a retention
  and then deleted by the janitor; they grow until the oldest row of the steady load
  passes the retention, and are judged only on the samples taken after that.
- ``data``: what the system keeps by design (sagas, orders, their history): it grows with
  every saga, and is shown per saga instead of being judged.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

HOUR_S = 3600.0


class Kind(StrEnum):
    """What a series is expected to do under a steady load."""

    bounded = "bounded"
    retained = "retained"
    data = "data"


@dataclass(frozen=True, kw_only=True)
class SeriesSpec:
    """What one series is expected to do.

    Attributes:
        kind: See :class:`Kind`.
        retention_s: For ``retained``: how long its rows are kept.
    """

    kind: Kind
    retention_s: float | None = None


@dataclass(frozen=True)
class Fit:
    """A least-squares line through some points.

    Attributes:
        slope: Units per second.
        intercept: The value at time 0.
        t_stat: The slope over its standard error: how clearly it differs from zero
            (``inf`` when the points lie exactly on a sloped line, 0 on a flat one).
        points: How many points it was fitted on.
    """

    slope: float
    intercept: float
    t_stat: float
    points: int


def least_squares(points: Sequence[tuple[float, float]]) -> Fit | None:
    """The ordinary least-squares line through ``points`` (None for fewer than 3 points,
    or when they all share one time)."""
    n = len(points)
    if n < 3:
        return None
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    sxx = sum((t - mean_t) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / sxx
    intercept = mean_v - slope * mean_t
    residual = sum((v - intercept - slope * t) ** 2 for t, v in points)
    # Tolerate the rounding of an exact line: its residual is noise of the arithmetic.
    scale = max(abs(v) for _, v in points) or 1.0
    if residual <= (1e-12 * scale) ** 2 * n:
        t_stat = math.inf if slope else 0.0
    else:
        t_stat = slope / math.sqrt(residual / (n - 2) / sxx)
    return Fit(slope=slope, intercept=intercept, t_stat=t_stat, points=n)


@dataclass(frozen=True, kw_only=True)
class GrowthRule:
    """When a growth counts as a problem.

    A series is flagged when, over the samples after the warm-up, it has at least
    ``min_points`` of them, its slope is positive, at least ``t_stat`` standard errors
    from zero (a trend, not noise), its growth per hour exceeds ``relative`` times its
    mean, and what it grew over those samples exceeds ``seen`` times its mean (a short
    run does not extrapolate a few kilobytes into a leak). A mean below 1 counts as 1,
    so that a series near zero is not flagged for a fraction of a message.

    Attributes:
        relative: Growth per hour, as a fraction of the mean, that is too much.
        seen: Growth over the samples judged, as a fraction of the mean, that shows.
        t_stat: How many standard errors the slope must be from zero.
        min_points: Fewest samples a verdict is given on.
        warmup_fraction: Share of the samples left out at the start.
        warmup_samples: Fewest samples left out at the start.
        settle_s: After a retention, how long the janitor may take to delete (its
            interval between sweeps).
    """

    relative: float = 0.10
    seen: float = 0.02
    t_stat: float = 3.0
    min_points: int = 4
    warmup_fraction: float = 0.10
    warmup_samples: int = 2
    settle_s: float = 10.0

    def describe(self) -> str:
        """The rule in one sentence, for the report."""
        return (
            f"GROWING = the least-squares slope over the samples after the warm-up "
            f"({self.min_points} at least) is {self.t_stat:g}+ standard errors above zero, "
            f"adds over {self.relative:.0%} of the series' mean per hour, and added over "
            f"{self.seen:.0%} of it while judged (a mean below 1 counts as 1)"
        )


def warmup_end(times: Sequence[float], rule: GrowthRule) -> float:
    """The time of the first sample after the warm-up (the first ``warmup_samples``
    samples, or the first ``warmup_fraction`` of them if more)."""
    if not times:
        return 0.0
    skip = max(rule.warmup_samples, math.ceil(rule.warmup_fraction * len(times)))
    ordered = sorted(times)
    return ordered[min(skip, len(ordered) - 1)]


@dataclass(frozen=True)
class SeriesSummary:
    """One row of the growth table.

    Attributes:
        name: The series.
        spec: What it was expected to do.
        first: Its first value; last, low, high likewise.
        per_hour: Growth per hour of the fit the verdict is based on (None: no fit).
        per_saga: For ``data``: growth per finished saga (None: unknown).
        verdict: What the figures mean, in a few words.
        flagged: Whether it grows where it should not.
    """

    name: str
    spec: SeriesSpec
    first: float
    last: float
    low: float
    high: float
    per_hour: float | None
    per_saga: float | None
    verdict: str
    flagged: bool

    @property
    def constant(self) -> bool:
        """Whether it never changed."""
        return self.low == self.high


def summarize_series(
    name: str,
    spec: SeriesSpec,
    samples: Sequence[tuple[float, float]],
    *,
    rule: GrowthRule,
    warmup_s: float,
    sagas_per_s: float | None = None,
) -> SeriesSummary:
    """Summarize one series.

    Args:
        name: The series.
        spec: What it is expected to do.
        samples: ``(seconds since the steady load began, value)``, at least one.
        rule: When growth is a problem.
        warmup_s: Samples before this time are left out of the fit.
        sagas_per_s: Sagas finished per second over the run, to show ``data`` per saga.
    """
    values = [v for _, v in samples]
    after = [(t, v) for t, v in samples if t >= warmup_s]
    summary = SeriesSummary(
        name=name,
        spec=spec,
        first=values[0],
        last=values[-1],
        low=min(values),
        high=max(values),
        per_hour=None,
        per_saga=None,
        verdict="",
        flagged=False,
    )
    fit = least_squares(after)
    if spec.kind is Kind.data:
        per_saga = fit.slope / sagas_per_s if fit is not None and sagas_per_s else None
        verdict = "kept by design" + (f": {_per_saga(name, per_saga)}" if per_saga else "")
        return _with(summary, fit, verdict=verdict, flagged=False, per_saga=per_saga)
    if spec.kind is Kind.retained and spec.retention_s is not None:
        settled_s = spec.retention_s + rule.settle_s
        settled = [(t, v) for t, v in after if t >= settled_s]
        if len(settled) < rule.min_points:
            level = f"; levels off near {_number(fit.slope * spec.retention_s)}" if fit else ""
            verdict = f"filling: kept {spec.retention_s:g} s, run too short to judge{level}"
            return _with(summary, fit, verdict=verdict, flagged=False)
        after, fit = settled, least_squares(settled)
    if fit is None or len(after) < rule.min_points:
        return _with(summary, fit, verdict="too few samples to judge", flagged=False)
    flagged = _grows(fit, after, rule)
    judged = "past its retention" if spec.kind is Kind.retained else "levels off"
    return _with(summary, fit, verdict="GROWING" if flagged else f"ok: {judged}", flagged=flagged)


def _per_saga(name: str, value: float) -> str:
    # Sizes are sampled in MiB; what one saga adds reads better in bytes.
    if name.endswith("_mb") or "_mb." in name:
        return f"{value * 1024 * 1024:.0f} bytes per saga"
    return f"{_number(value)} per saga"


def _grows(fit: Fit, points: Sequence[tuple[float, float]], rule: GrowthRule) -> bool:
    level = max(abs(sum(v for _, v in points) / len(points)), 1.0)
    judged_s = max(t for t, _ in points) - min(t for t, _ in points)
    return (
        fit.slope > 0
        and fit.t_stat >= rule.t_stat
        and fit.slope * HOUR_S > rule.relative * level
        and fit.slope * judged_s > rule.seen * level
    )


def _with(
    summary: SeriesSummary,
    fit: Fit | None,
    *,
    verdict: str,
    flagged: bool,
    per_saga: float | None = None,
) -> SeriesSummary:
    per_hour = fit.slope * HOUR_S if fit is not None else None
    return dataclasses.replace(
        summary, per_hour=per_hour, per_saga=per_saga, verdict=verdict, flagged=flagged
    )


def summarize_all(
    series: Mapping[str, Sequence[tuple[float, float]]],
    specs: Mapping[str, SeriesSpec],
    *,
    rule: GrowthRule,
    sagas_per_s: float | None,
) -> list[SeriesSummary]:
    """Summarize every series that has samples, in name order; one warm-up for all of
    them (from every sample time seen)."""
    times = sorted({t for points in series.values() for t, _ in points})
    warmup_s = warmup_end(times, rule)
    return [
        summarize_series(
            name,
            specs.get(name, SeriesSpec(kind=Kind.bounded)),
            points,
            rule=rule,
            warmup_s=warmup_s,
            sagas_per_s=sagas_per_s,
        )
        for name, points in sorted(series.items())
        if points
    ]


def format_growth_table(summaries: Sequence[SeriesSummary]) -> str:
    """The growth table: one line per series that changed, then one line naming the
    series that never did, with their value."""
    moving = [s for s in summaries if not s.constant]
    constant = [s for s in summaries if s.constant]
    header = ("series", "kind", "first", "last", "min", "max", "growth/h", "verdict")
    rows = [
        (
            s.name,
            s.spec.kind.value,
            _number(s.first),
            _number(s.last),
            _number(s.low),
            _number(s.high),
            "-" if s.per_hour is None else _number(s.per_hour, sign=True),
            s.verdict,
        )
        for s in moving
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        left = f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}"
        figures = "  ".join(f"{cell:>{w}}" for cell, w in zip(row[2:-1], widths[2:], strict=True))
        lines.append(f"{left}  {figures}  {row[-1]}".rstrip())
    if constant:
        lines += textwrap.wrap(
            ", ".join(f"{s.name}={_number(s.first)}" for s in constant),
            width=100,
            initial_indent="constant throughout: ",
            subsequent_indent="  ",
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _number(value: float, *, sign: bool = False) -> str:
    """A figure as short as its size allows: integers bare, others to 3 significant
    digits (at least one decimal below 100)."""
    plus = "+" if sign else ""
    if float(value).is_integer():
        return f"{value:{plus}.0f}"
    if abs(value) >= 100:
        return f"{value:{plus}.0f}"
    if abs(value) >= 1:
        return f"{value:{plus}.1f}"
    return f"{value:{plus}.3g}"
