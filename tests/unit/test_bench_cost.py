"""The pure parts of the bench's cost block: /proc, /metrics text, diffs, the block itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sagaway.bench import (
    BackendCost,
    CostRow,
    CpuSampler,
    MetricsSource,
    Snapshot,
    Usage,
    backend_cost,
    cost_rows,
    default_sources,
    format_cost,
    parse_metrics,
    parse_source,
    parse_stat,
    usage_of,
)
from sagaway.bench.saga import invariants_line
from sagaway.services.order_app import order_app
from sagaway.supervisor import DEFAULT_METRICS_PORT_BASE, components

pytestmark = pytest.mark.unit

# A real line's shape: the name holds a space and parentheses; utime..cstime are 11..14.
STAT = (
    "4242 (postgres: (idle) x) S 2201 2201 2201 0 -1 4194560 1171 0 0 0 "
    "11 4 7 3 20 0 1 0 1570 229642240 3367 18446744073709551615 1 1 0 0 0 0 "
    "4194304 19935232 536890375 0 0 0 17 1 0 0 0 0 0"
)

COMPONENT = """\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# HELP sagaway_db_statements_total Statements sent to PostgreSQL.
# TYPE sagaway_db_statements_total counter
sagaway_db_statements_total 100.0
# HELP sagaway_db_transactions_total Transactions that reached PostgreSQL.
# TYPE sagaway_db_transactions_total counter
sagaway_db_transactions_total{outcome="commit"} 30.0
sagaway_db_transactions_total{outcome="rollback"} 10.0
# HELP sagaway_db_round_trips_total Round trips.
# TYPE sagaway_db_round_trips_total counter
sagaway_db_round_trips_total 180.0
# HELP sagaway_messages_consumed_total Messages a consumer finished with, by result.
# TYPE sagaway_messages_consumed_total counter
sagaway_messages_consumed_total{queue="q",result="applied"} 40.0
sagaway_messages_consumed_total{queue="q",result="duplicate"} 2.0
sagaway_messages_consumed_total{queue="q",result="dead_lettered"} 1.0
sagaway_messages_consumed_created{queue="q",result="applied"} 1.7e9
# HELP sagaway_messages_dead_lettered_total Dead-lettered.
# TYPE sagaway_messages_dead_lettered_total counter
sagaway_messages_dead_lettered_total{queue="q",reason="not_json"} 1.0
"""


def test_a_stat_line_gives_name_and_cpu_fields() -> None:
    stat = parse_stat(STAT)
    assert (stat.pid, stat.comm) == (4242, "postgres: (idle) x")
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime) == (11, 4, 7, 3)
    assert stat.ticks == 25


@pytest.mark.parametrize("line", ["", "12 postgres S 1", "1 (x) S 1 2 3"])
def test_what_is_not_a_stat_line_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="stat line"):
        parse_stat(line)


def _proc(root: Path, pid: int, comm: str, utime: int, stime: int, cutime: int = 0) -> None:
    fields = ["S", "1", *["0"] * 9, str(utime), str(stime), str(cutime), "0", "20", "0"]
    (root / str(pid)).mkdir()
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")


def test_the_sampler_adds_up_groups_by_command_name_and_by_pid(tmp_path: Path) -> None:
    _proc(tmp_path, 10, "postgres", 100, 50, cutime=25)
    _proc(tmp_path, 11, "postgres", 20, 5)
    _proc(tmp_path, 20, "beam.smp", 300, 100)
    _proc(tmp_path, 21, "epmd", 1, 1)
    _proc(tmp_path, 30, "python3", 7, 3)
    (tmp_path / "self").mkdir()  # not a pid: skipped
    sampler = CpuSampler(pids={"peer": [30]}, proc=tmp_path)

    seconds = sampler.sample()

    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert seconds == pytest.approx(
        {"postgres": 200 * tick, "rabbitmq": 402 * tick, "peer": 10 * tick}
    )


def test_a_group_with_nothing_to_see_is_none(tmp_path: Path) -> None:
    _proc(tmp_path, 30, "python3", 7, 3)
    sampler = CpuSampler(pids={"gone": [99]}, proc=tmp_path)
    assert sampler.sample() == {"postgres": None, "rabbitmq": None, "gone": None}
    assert CpuSampler(proc=tmp_path / "missing").sample() == {"postgres": None, "rabbitmq": None}


def test_metric_samples_add_up_by_name_and_label_subset() -> None:
    samples = parse_metrics(COMPONENT)
    assert samples.total("sagaway_db_transactions_total") == 40.0
    assert samples.total("sagaway_db_transactions_total", outcome="rollback") == 10.0
    assert samples.total("sagaway_messages_consumed_total") == 43.0
    assert samples.total("sagaway_outbox_published_total") is None


def test_a_components_usage_counts_deliveries_whatever_became_of_them() -> None:
    usage = usage_of(parse_metrics(COMPONENT))
    assert usage == Usage(
        cpu_s=12.5,
        statements=100.0,
        transactions=40.0,
        rollbacks=10.0,
        round_trips=180.0,
        publishes=0.0,  # a component that has published nothing yet
        deliveries=43.0,
    )


def test_a_process_that_is_not_sagaways_has_only_cpu() -> None:
    text = "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.0\n"
    assert usage_of(parse_metrics(text)) == Usage(cpu_s=3.0)


def test_cost_rows_diff_components_then_processes_and_drop_restarted_ones() -> None:
    before = Snapshot(
        components={
            "api": Usage(cpu_s=1.0, statements=10.0, publishes=0.0),
            "relay": Usage(cpu_s=5.0, statements=50.0),
            "payment": None,
        },
        processes={"postgres": 100.0, "rabbitmq": None},
    )
    after = Snapshot(
        components={
            "api": Usage(cpu_s=3.0, statements=30.0, publishes=0.0),
            "relay": Usage(cpu_s=0.5, statements=2.0),  # restarted: counters went down
            "payment": Usage(cpu_s=1.0),
        },
        processes={"postgres": 104.0, "rabbitmq": None},
    )
    assert cost_rows(before, after) == [
        CostRow("api", Usage(cpu_s=2.0, statements=20.0, publishes=0.0)),
        CostRow("relay", None),
        CostRow("payment", None),
        CostRow("postgres", Usage(cpu_s=4.0)),
        CostRow("rabbitmq", None),
    ]


def test_the_cost_block_has_a_line_per_process_a_total_and_the_amqp_traffic() -> None:
    rows = [
        CostRow(
            "api",
            Usage(
                cpu_s=2.0,
                statements=400.0,
                transactions=200.0,
                rollbacks=100.0,
                round_trips=800.0,
                publishes=0.0,
                deliveries=0.0,
            ),
        ),
        CostRow(
            "relay",
            Usage(
                cpu_s=1.0,
                statements=300.0,
                transactions=0.0,
                rollbacks=0.0,
                round_trips=300.0,
                publishes=700.0,
                deliveries=0.0,
            ),
        ),
        CostRow("payment", None),
        CostRow("postgres", Usage(cpu_s=1.5)),
    ]

    block = format_cost(rows, sagas=100, client_cpu_s=0.25, cores=2).splitlines()

    assert block == [
        "cost per saga (100 finished sagas; counters diffed over the run):",
        "per saga         CPU ms  statements  transactions  rollbacks  round trips  publishes"
        "  deliveries",
        "api               20.00        4.00          2.00       1.00         8.00       0.00"
        "        0.00",
        "relay             10.00        3.00          0.00       0.00         3.00       7.00"
        "        0.00",
        "payment             n/a",
        "postgres          15.00           -             -          -            -          -"
        "           -",
        "total             45.00        7.00          2.00       1.00        11.00       7.00"
        "        0.00",
        "n/a (not in the total): payment",
        "AMQP per saga: 7.00 publishes, 0.00 deliveries",
        "bench client CPU: 2.50 ms per saga (not in the total)",
        "CPU-bound ceiling: 2 cores / 45.00 ms = 44.4 sagas/s (bench client excluded)",
    ]


def test_no_finished_saga_means_no_cost_per_saga() -> None:
    assert format_cost([CostRow("api", Usage(cpu_s=1.0))], sagas=0) == (
        "cost per saga: n/a (no saga finished)"
    )


def test_the_default_sources_are_the_api_and_the_side_ports_of_sagaway_up() -> None:
    assert default_sources("http://127.0.0.1:8000/") == (
        MetricsSource("api", "http://127.0.0.1:8000/metrics/"),
        MetricsSource("relay", "http://127.0.0.1:9401/metrics"),
        MetricsSource("orchestrator", "http://127.0.0.1:9402/metrics"),
        MetricsSource("inventory", "http://127.0.0.1:9403/metrics"),
        MetricsSource("payment", "http://127.0.0.1:9404/metrics"),
        MetricsSource("notification", "http://127.0.0.1:9405/metrics"),
        MetricsSource("backend", "http://127.0.0.1:9406/metrics"),
    )


def test_a_metrics_url_option_is_named_or_named_by_its_address() -> None:
    assert parse_source("relay=http://h:9401/metrics") == MetricsSource(
        "relay", "http://h:9401/metrics"
    )
    assert parse_source("http://h:9409/metrics?a=b") == MetricsSource(
        "h:9409", "http://h:9409/metrics?a=b"
    )
    with pytest.raises(ValueError, match="http"):
        parse_source("relay=h:9401")


def test_the_database_backends_cpu_counts_each_backends_increase() -> None:
    before = Snapshot(components={}, processes={}, backends={1: 10.0, 2: 5.0, 3: 1.0})
    # 1 went on, 2 is gone (not counted), 4 started during the run (all of it counts)
    after = Snapshot(components={}, processes={}, backends={1: 10.5, 4: 0.25})
    assert backend_cost(before, after, "db") == BackendCost(database="db", cpu_s=0.75, processes=2)
    assert backend_cost(Snapshot(components={}, processes={}), after, "db") is None


def test_the_database_backends_share_is_a_line_of_the_block() -> None:
    block = format_cost(
        [CostRow("postgres", Usage(cpu_s=2.0))],
        sagas=100,
        backends=BackendCost(database="sagaway", cpu_s=1.5, processes=23),
    )
    assert (
        "of postgres: 15.00 ms in the 23 backends of database sagaway (the rest: the server's "
        "own processes, autovacuum, other databases)"
    ) in block.splitlines()


def test_the_sampler_reads_single_pids_own_cpu(tmp_path: Path) -> None:
    _proc(tmp_path, 10, "postgres", 100, 50, cutime=25)
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert CpuSampler(proc=tmp_path).per_pid([10, 11]) == pytest.approx({10: 150 * tick})


def test_sagaway_up_runs_two_processes_by_default_and_six_when_split() -> None:
    shared = components(
        8000, "127.0.0.1", DEFAULT_METRICS_PORT_BASE, participants=order_app.participant_names
    )
    assert [(c.name, c.args[0]) for c in shared] == [("api", "api"), ("backend", "backend")]
    assert shared[1].env["SAGAWAY_METRICS_PORT"] == "9406"
    split = components(
        8000,
        "127.0.0.1",
        DEFAULT_METRICS_PORT_BASE,
        participants=order_app.participant_names,
        split=True,
    )
    assert [c.name for c in split] == [
        "api",
        "relay",
        "orchestrator",
        "inventory",
        "payment",
        "notification",
    ]
    assert [c.env.get("SAGAWAY_METRICS_PORT") for c in split[1:]] == [
        "9401",
        "9402",
        "9403",
        "9404",
        "9405",
    ]


def test_the_invariants_line_says_hold_broken_or_not_checked() -> None:
    assert invariants_line(None) == "invariants: not checked (no --database-url)"
    assert invariants_line([]).startswith("invariants: hold")
    broken = invariants_line([f"sku S{n}: reserved 1, approved units 0" for n in range(25)])
    assert broken.startswith("invariants: 25 BROKEN\n  sku S0:")
    assert broken.count("\n  sku ") == 20 and broken.endswith("... and 5 more")
