"""The pure parts of ``sagaway bench soak``: slopes, verdicts, the growth table, the report."""

from __future__ import annotations

import dataclasses
import math
import random
import re
from pathlib import Path

import pytest

from sagaway.bench.growth import (
    GrowthRule,
    Kind,
    SeriesSpec,
    format_growth_table,
    least_squares,
    summarize_all,
    summarize_series,
    warmup_end,
)
from sagaway.bench.holdings import series_spec
from sagaway.bench.pacing import DueSaga, PaceTally, windows
from sagaway.bench.soak_report import (
    Capacity,
    Sample,
    SoakResult,
    format_soak_report,
    series_of,
    soak_exit_code,
)
from sagaway.bench.workload import SagaOutcome

pytestmark = pytest.mark.unit

RULE = GrowthRule()
BOUNDED = SeriesSpec(kind=Kind.bounded)
# 30 minutes sampled every 30 s, as the lead's soak runs.
TIMES = [30.0 * i for i in range(61)]


def _line(
    slope_per_h: float, level: float, *, noise: float = 0.0, seed: int = 1
) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(t, level + slope_per_h * t / 3600 + rng.gauss(0, noise)) for t in TIMES]


def test_least_squares_recovers_an_exact_line() -> None:
    fit = least_squares([(0.0, 5.0), (10.0, 7.0), (20.0, 9.0), (30.0, 11.0)])
    assert fit is not None
    assert fit.slope == pytest.approx(0.2)
    assert fit.intercept == pytest.approx(5.0)
    assert fit.t_stat == math.inf
    assert fit.points == 4


def test_a_flat_series_has_no_slope_and_no_significance() -> None:
    fit = least_squares([(0.0, 3.0), (1.0, 3.0), (2.0, 3.0)])
    assert fit is not None
    assert (fit.slope, fit.t_stat) == (0.0, 0.0)


def test_least_squares_matches_the_textbook_figures_on_noisy_points() -> None:
    # y = 1 + 2t with residuals +1, -1, -1, +1: slope 2, residual 4 over 2 degrees of
    # freedom, Sxx = 5, so the standard error is sqrt(2 / 5).
    fit = least_squares([(0.0, 2.0), (1.0, 2.0), (2.0, 4.0), (3.0, 8.0)])
    assert fit is not None
    assert fit.slope == pytest.approx(2.0)
    assert fit.t_stat == pytest.approx(2.0 / math.sqrt(2 / 5))


def test_no_line_through_too_few_points_or_a_single_time() -> None:
    assert least_squares([(0.0, 1.0), (1.0, 2.0)]) is None
    assert least_squares([(5.0, 1.0), (5.0, 2.0), (5.0, 3.0)]) is None


@pytest.mark.parametrize(
    ("samples", "skipped"),
    [(6, 2), (20, 2), (61, 7), (1, 0)],
)
def test_the_warm_up_is_two_samples_or_a_tenth_whichever_is_more(
    samples: int, skipped: int
) -> None:
    times = [30.0 * i for i in range(samples)]
    assert warmup_end(times, RULE) == times[skipped]


def test_memory_that_keeps_climbing_is_flagged() -> None:
    # 100 MB climbing 20 MB/h: 20% of its level per hour, well above the noise.
    summary = summarize_series(
        "proc.api.rss_mb", BOUNDED, _line(20, 100, noise=0.3), rule=RULE, warmup_s=210
    )
    assert summary.flagged
    assert summary.verdict == "GROWING"
    assert summary.per_hour == pytest.approx(20, rel=0.1)


def test_memory_that_wobbles_around_a_level_is_not_flagged() -> None:
    summary = summarize_series(
        "proc.api.rss_mb", BOUNDED, _line(0, 100, noise=2.0), rule=RULE, warmup_s=210
    )
    assert not summary.flagged
    assert summary.verdict == "ok: levels off"


def test_a_clear_but_small_growth_under_ten_percent_an_hour_is_not_flagged() -> None:
    summary = summarize_series(
        "proc.api.rss_mb", BOUNDED, _line(5, 100, noise=0.01), rule=RULE, warmup_s=210
    )
    assert summary.per_hour == pytest.approx(5, rel=0.01)
    assert not summary.flagged


def test_a_short_run_does_not_extrapolate_a_sliver_into_a_leak() -> None:
    # 15 s sampled every 3 s: +40 kB is +10 MB/h, yet 0.05% of what the process holds.
    times = [3.0 * i for i in range(6)]
    sliver = [(t, 86.6 + 0.04 * t / 15) for t in times]
    summary = summarize_series("proc.api.rss_mb", BOUNDED, sliver, rule=RULE, warmup_s=6)
    assert summary.per_hour is not None and summary.per_hour > 0.1 * 86.6
    assert not summary.flagged
    # Three minutes in which it put on 10 MB are another matter.
    times = [30.0 * i for i in range(7)]
    leak = [(t, 86.6 + 10 * t / 180) for t in times]
    assert summarize_series("proc.api.rss_mb", BOUNDED, leak, rule=RULE, warmup_s=60).flagged


def test_a_series_near_zero_is_judged_against_one_unit_not_its_mean() -> None:
    # A queue that is usually empty: half a message an hour is no leak ...
    calm = summarize_series("amqp.q.ready", BOUNDED, _line(0.05, 0), rule=RULE, warmup_s=210)
    assert not calm.flagged
    # ... but one that fills by a message a minute is.
    filling = summarize_series("amqp.q.ready", BOUNDED, _line(60, 0), rule=RULE, warmup_s=210)
    assert filling.flagged


def test_a_shrinking_series_is_never_flagged() -> None:
    summary = summarize_series("proc.api.fds", BOUNDED, _line(-50, 100), rule=RULE, warmup_s=210)
    assert summary.per_hour == pytest.approx(-50)
    assert not summary.flagged


def test_the_warm_up_is_left_out_of_the_fit() -> None:
    # A process that grows while it warms up, then holds still.
    samples = [(t, 80.0 + min(t, 60.0) / 6) for t in TIMES]
    judged = summarize_series("proc.api.rss_mb", BOUNDED, samples, rule=RULE, warmup_s=90)
    assert judged.per_hour == 0.0
    assert not judged.flagged
    assert (judged.first, judged.last, judged.low, judged.high) == (80.0, 90.0, 80.0, 90.0)
    unfair = summarize_series("proc.api.rss_mb", BOUNDED, samples, rule=RULE, warmup_s=0)
    assert unfair.per_hour is not None and unfair.per_hour > judged.per_hour


def test_too_few_samples_after_the_warm_up_get_no_verdict() -> None:
    samples = [(0.0, 1.0), (30.0, 2.0), (60.0, 3.0), (90.0, 4.0)]
    summary = summarize_series("proc.api.fds", BOUNDED, samples, rule=RULE, warmup_s=60)
    assert summary.verdict == "too few samples to judge"
    assert not summary.flagged


def _retained(t: float, *, rate: float, keep_s: float, leak_per_s: float = 0.0) -> float:
    """Rows of a table written ``rate`` rows/s and pruned after ``keep_s``."""
    return rate * min(t, keep_s) + leak_per_s * max(0.0, t - keep_s)


def test_a_retained_table_still_filling_is_not_judged_and_its_plateau_is_estimated() -> None:
    inbox = SeriesSpec(kind=Kind.retained, retention_s=604800.0)
    samples = [(t, _retained(t, rate=10, keep_s=604800)) for t in TIMES]
    summary = summarize_series("pg.s.inbox.rows.c", inbox, samples, rule=RULE, warmup_s=210)
    assert not summary.flagged
    assert summary.verdict == (
        "filling: kept 604800 s, run too short to judge; levels off near 6048000"
    )


def test_a_retained_table_that_levels_off_after_its_retention_is_fine() -> None:
    outbox = SeriesSpec(kind=Kind.retained, retention_s=300.0)
    samples = [(t, _retained(t, rate=40, keep_s=300)) for t in TIMES]
    summary = summarize_series("pg.s.outbox.rows", outbox, samples, rule=RULE, warmup_s=210)
    assert summary.verdict == "ok: past its retention"
    assert summary.per_hour == 0.0


def test_a_retained_table_that_keeps_growing_past_its_retention_is_flagged() -> None:
    # The janitor deletes only part of what ages out.
    outbox = SeriesSpec(kind=Kind.retained, retention_s=300.0)
    samples = [(t, _retained(t, rate=40, keep_s=300, leak_per_s=5)) for t in TIMES]
    summary = summarize_series("pg.s.outbox.rows", outbox, samples, rule=RULE, warmup_s=210)
    assert summary.flagged
    assert summary.per_hour == pytest.approx(5 * 3600)


def test_data_kept_by_design_is_shown_per_saga_and_never_flagged() -> None:
    data = SeriesSpec(kind=Kind.data)
    rows = summarize_series(
        "pg.saga_status.COMPLETED", data, _line(180000, 0), rule=RULE, warmup_s=210, sagas_per_s=50
    )
    assert rows.verdict == "kept by design: 1 per saga"
    assert not rows.flagged
    size = summarize_series(
        "pg.size_mb.sagas.sagas", data, _line(180, 1), rule=RULE, warmup_s=210, sagas_per_s=50
    )
    assert size.verdict == "kept by design: 1049 bytes per saga"


@pytest.mark.parametrize(
    ("name", "kind", "retention_s"),
    [
        ("proc.backend.rss_mb", Kind.bounded, None),
        ("pg.connections.database", Kind.bounded, None),
        ("pg.sagas.outbox.rows", Kind.retained, 300.0),
        ("pg.sagas.outbox.unpublished", Kind.bounded, None),
        ("pg.sagas.outbox.dead_rows", Kind.bounded, None),
        ("pg.payment.inbox.rows.payment", Kind.retained, 900.0),
        ("pg.size_mb.payment.inbox", Kind.retained, 900.0),
        ("pg.size_mb.inventory.outbox", Kind.retained, 300.0),
        ("pg.size_mb.orders.orders", Kind.data, None),
        ("pg.saga_status.COMPLETED", Kind.data, None),
        ("pg.saga_status.RUNNING", Kind.bounded, None),
        ("pg.saga_status.FAILED", Kind.bounded, None),
        ("amqp.sagaway.payment.dead.ready", Kind.bounded, None),
    ],
)
def test_what_each_series_is_expected_to_do(
    name: str, kind: Kind, retention_s: float | None
) -> None:
    spec = series_spec(name, outbox_retention_s=300.0, inbox_retention_s=900.0)
    assert (spec.kind, spec.retention_s) == (kind, retention_s)


def test_the_table_lines_up_moving_series_and_lists_constant_ones() -> None:
    series = {
        "proc.api.rss_mb": _line(20, 100, noise=0.3),
        "proc.api.threads": [(t, 5.0) for t in TIMES],
        "amqp.q.ready": [(t, 0.0) for t in TIMES],
    }
    summaries = summarize_all(series, {}, rule=RULE, sagas_per_s=None)
    table = format_growth_table(summaries).splitlines()

    assert re.match(r"^series\s+kind\s+first\s+last\s+min\s+max\s+growth/h\s+verdict$", table[0])
    assert re.match(
        r"^proc\.api\.rss_mb\s+bounded(\s+\d+){4}\s+\+\d+\.\d\s+GROWING$",
        table[1],
    )
    # Figures are right-aligned under their header.
    assert table[0].index("growth/h") + len("growth/h") == table[1].index("  GROWING")
    assert table[2] == "constant throughout: amqp.q.ready=0, proc.api.threads=5"


def _due(due_s: float, status: str, latency_ms: float | None) -> DueSaga:
    return DueSaga(due_s, SagaOutcome(status, latency_ms))


def test_latency_is_given_per_quarter_of_the_load_by_when_orders_were_due() -> None:
    sagas = [_due(float(s), "COMPLETED", 10.0 + s) for s in range(100)]
    sagas.append(_due(99.5, "timeout", 120000.0))
    sagas.append(_due(100.2, "COMPLETED", 500.0))  # due at the very end: the last quarter
    parts = windows(sagas, seconds=100)
    assert [(w.start_s, w.end_s) for w in parts] == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert [w.stats.count if w.stats else 0 for w in parts] == [25, 25, 25, 26]
    assert parts[0].stats is not None and parts[0].stats.p50 == 22.0
    assert parts[3].stats is not None and parts[3].stats.max == 500.0
    assert [w.failed for w in parts] == [0, 0, 0, 1]


def _result(*, growing: bool, pace: PaceTally | None = None) -> SoakResult:
    samples = [
        Sample(t, {"proc.api.rss_mb": 100 + (t / 36 if growing else 0), "amqp.q.ready": 0.0})
        for t in TIMES
    ]
    series = series_of(samples)
    if pace is None:
        pace = PaceTally(placed=3, sagas=[_due(1.0, "COMPLETED", 40.0)] * 3)
    return SoakResult(
        rate=50.0,
        seconds=1800.0,
        max_in_flight=500,
        sample_s=30.0,
        capacity=Capacity(sagas_per_s=100.0, clients=100, seconds=30.0, fraction=0.5),
        pace=pace,
        samples=samples,
        summaries=summarize_all(series, {}, rule=RULE, sagas_per_s=None),
        rule=RULE,
        warmup_s=warmup_end([s.t_s for s in samples], RULE),
        retention_s={"outbox": 300.0, "inbox": 900.0},
        restarts={"backend": 1},
        out=Path("soak.csv"),
        problems=[],
    )


def test_the_report_states_the_load_the_rule_and_the_verdict() -> None:
    report = format_soak_report(_result(growing=True))
    assert report.startswith(
        "soak: 30.0 min at 50.0 sagas/s, 50% of the 100.0 sagas/s measured "
        "(closed loop, 100 clients, 30 s)\n"
    )
    assert (
        "placed 3: COMPLETED 3  COMPENSATED 0  FAILED 0  timeout 0  http_error 0  behind 0"
        in report
    )
    assert "process restarts: backend x1" in report
    assert (
        "samples: 61, every 30 s; the fits leave out the warm-up before 210 s; written to soak.csv"
        in report
    )
    assert "outbox rows are kept 300 s after they are published and inbox rows 900 s" in report
    assert report.endswith("verdict: 1 series GROWING: proc.api.rss_mb")
    assert soak_exit_code(_result(growing=True)) == 1


def test_a_clean_soak_says_nothing_grows_and_exits_zero() -> None:
    result = _result(growing=False)
    assert format_soak_report(result).endswith("verdict: nothing grows without bound")
    assert "autovacuum" not in format_soak_report(result)
    assert soak_exit_code(result) == 0


def test_the_report_warns_when_nothing_reclaims_what_the_janitor_deletes() -> None:
    result = dataclasses.replace(_result(growing=False), autovacuum=False)
    report = format_soak_report(result)
    assert "\nautovacuum is OFF on this PostgreSQL: the janitor deletes" in report


@pytest.mark.parametrize(
    "pace",
    [
        PaceTally(placed=1, sagas=[_due(1.0, "timeout", 120000.0)]),
        PaceTally(placed=1, behind=1, sagas=[_due(1.0, "COMPLETED", 40.0)]),
    ],
)
def test_a_soak_with_failed_or_missed_orders_exits_one(pace: PaceTally) -> None:
    assert soak_exit_code(_result(growing=False, pace=pace)) == 1
