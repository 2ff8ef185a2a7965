"""The pure statistics and report helpers of ``sagaway bench``."""

from __future__ import annotations

from collections import Counter

import pytest

from sagaway.bench import (
    BENCH_SKUS,
    REJECT_SKU,
    BenchTally,
    RunCustomers,
    WorkloadOptions,
    exit_code,
    format_report,
    order_body,
    percentile,
    summarize,
)
from sagaway.bench.workload import wait_seconds

pytestmark = pytest.mark.unit


def test_nearest_rank_on_one_to_hundred_is_the_percentile_itself() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 95) == 95.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile(samples, 0.5) == 1.0


def test_nearest_rank_rounds_the_rank_up_and_never_interpolates() -> None:
    samples = [10.0, 20.0, 30.0, 40.0]
    # rank = ceil(0.5 * 4) = 2; an interpolating percentile would say 25.0
    assert percentile(samples, 50) == 20.0
    # rank = ceil(0.51 * 4) = 3
    assert percentile(samples, 51) == 30.0
    # rank = ceil(0.95 * 4) = 4
    assert percentile(samples, 95) == 40.0


def test_rank_is_exact_where_float_products_would_overshoot() -> None:
    # 0.95 * 20 in floating point is not exactly 19; the rank must still be 19, not 20.
    samples = [float(n) for n in range(1, 21)]
    assert percentile(samples, 95) == 19.0
    samples = [float(n) for n in range(1, 1001)]
    assert percentile(samples, 99.9) == 999.0


def test_a_single_sample_is_every_percentile() -> None:
    assert percentile([7.5], 1) == 7.5
    assert percentile([7.5], 99) == 7.5


@pytest.mark.parametrize("pct", [0, -1, 100.01])
def test_percentile_out_of_range_is_refused(pct: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0, 2.0], pct)


def test_percentile_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_summarize_sorts_and_takes_exact_samples() -> None:
    samples = [float(n) for n in range(200, 0, -1)]  # 200 .. 1, descending
    stats = summarize(samples)
    assert stats is not None
    assert stats.count == 200
    assert (stats.p50, stats.p95, stats.p99, stats.max) == (100.0, 190.0, 198.0, 200.0)
    assert samples[0] == 200.0  # the caller's list is left as it was


def test_summarize_of_nothing_is_none() -> None:
    assert summarize([]) is None


CUSTOMERS = RunCustomers(funded="bench-x", penniless="bench-x-poor")


def _options(**overrides: object) -> WorkloadOptions:
    values: dict[str, object] = {"sagas": 100, "concurrency": 5, "admin_token": "t"}
    return WorkloadOptions(**(values | overrides))  # type: ignore[arg-type]


def test_orders_spread_over_the_bench_skus_one_unit_each() -> None:
    bodies = [order_body(i, customers=CUSTOMERS, reject_every=0) for i in range(25)]
    skus = [b["items"][0]["sku"] for b in bodies]  # type: ignore[index]
    assert skus[: len(BENCH_SKUS)] == list(BENCH_SKUS)
    assert REJECT_SKU not in skus
    assert all(b["customer_id"] == "bench-x" for b in bodies)
    assert all(b["items"][0]["quantity"] == 1 for b in bodies)  # type: ignore[index]


def test_every_kth_order_asks_for_the_empty_sku() -> None:
    rejected = [
        i
        for i in range(30)
        if order_body(i, customers=CUSTOMERS, reject_every=10)["items"][0]["sku"]  # type: ignore[index]
        == REJECT_SKU
    ]
    # 1-based orders 10, 20, 30
    assert rejected == [9, 19, 29]


def test_credit_rejections_are_the_penniless_customers_orders_for_stocked_skus() -> None:
    bodies = [
        order_body(i, customers=CUSTOMERS, reject_every=10, reject_kind="credit") for i in range(30)
    ]
    poor = [i for i, b in enumerate(bodies) if b["customer_id"] == "bench-x-poor"]
    assert poor == [9, 19, 29]
    skus = {b["items"][0]["sku"] for b in bodies}  # type: ignore[index]
    assert skus == set(BENCH_SKUS)


@pytest.mark.parametrize(
    ("remaining", "wait"), [(120.0, 30), (30.0, 30), (12.2, 13), (0.4, 1), (-3.0, 1)]
)
def test_a_long_poll_waits_what_is_left_in_whole_seconds_from_1_to_30(
    remaining: float, wait: int
) -> None:
    assert wait_seconds(remaining) == wait


def _tally() -> BenchTally:
    tally = BenchTally()
    tally.terminal_ms["COMPLETED"] = [float(n) for n in range(1, 91)]
    tally.terminal_ms["COMPENSATED"] = [float(n) for n in range(101, 109)]
    tally.timeouts = 1
    tally.http_errors = Counter({"POST 503": 1})
    tally.post_ms = [float(n) for n in range(1, 100)]
    tally.polls = 490
    tally.wall_s = 2.0
    return tally


def test_report_gives_throughput_latency_and_the_outcome_mix() -> None:
    options = _options(long_poll=False, reject_every=10, reject_kind="credit")
    report = format_report(_tally(), options).splitlines()
    assert report[0] == "sagas: 100  concurrency: 5  wall: 2.00 s"
    # 98 sagas reached a terminal state in 2 s
    assert report[1].startswith("throughput: 49.0 sagas/s")
    # 98 samples: p50 rank 49, p95 rank 94 (-> 104), p99 rank 98 (-> 108)
    assert report[2] == ("latency POST->terminal (ms): p50 49.0  p95 104.0  p99 108.0  max 108.0")
    assert "  COMPLETED only (ms): p50 45.0  p95 86.0  p99 90.0  max 90.0" in report
    assert "  COMPENSATED only (ms): p50 104.0  p95 108.0  p99 108.0  max 108.0" in report
    assert "latency POST alone (ms): p50 50.0  p99 99.0  max 99.0" in report
    assert (
        "outcomes: COMPLETED 90 (90.0%)  COMPENSATED 8 (8.0%)  FAILED 0  "
        "timeout 1 (1.0%)  http_errors 1 (1.0%)"
    ) in report
    assert "http errors: POST 503 x1" in report
    assert "rejected on purpose: every 10th order (insufficient_funds)" in report
    assert "polls: 490 (5.0 per finished saga, polled every 20 ms)" in report


def test_report_with_one_outcome_has_no_per_outcome_lines_and_no_error_line() -> None:
    tally = BenchTally()
    tally.terminal_ms["COMPLETED"] = [5.0, 6.0]
    tally.post_ms = [1.0, 2.0]
    tally.polls = 2
    tally.wall_s = 0.5
    report = format_report(tally, _options(sagas=2, concurrency=1))
    assert "only (ms)" not in report
    assert "http errors:" not in report
    assert "rejected on purpose" not in report
    assert "polls: 2 (1.0 per finished saga, long-poll wait_s)" in report
    assert "outcomes: COMPLETED 2 (100.0%)  COMPENSATED 0  FAILED 0  timeout 0  http_errors 0" in (
        report
    )


def test_report_when_nothing_finished_invents_no_figures() -> None:
    tally = BenchTally()
    tally.timeouts = 3
    tally.wall_s = 1.0
    report = format_report(tally, _options(sagas=3, concurrency=3))
    assert "throughput: 0.0 sagas/s" in report
    assert "latency POST->terminal (ms): n/a (no samples)" in report
    assert "polls:" not in report


def test_exit_code_is_one_on_any_timeout_or_http_error() -> None:
    clean = BenchTally()
    clean.terminal_ms["COMPENSATED"] = [1.0]
    assert exit_code(clean) == 0
    assert exit_code(_tally()) == 1
    only_error = BenchTally()
    only_error.http_errors["GET ReadTimeout"] += 1
    assert exit_code(only_error) == 1
