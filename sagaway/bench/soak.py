"""``sagaway bench soak``: a steady load for a long time, and what grows meanwhile.

First the capacity is measured with a short closed-loop burst (unless a rate is given);
then orders are placed in an open loop at a fraction of it (half by default). Every
``sample_s`` the footprint of every component process (:mod:`sagaway.bench.footprint`)
and what PostgreSQL and RabbitMQ hold (:mod:`sagaway.bench.holdings`) are sampled,
written to a CSV file as they come and summarized on one progress line. At the end the
report (:mod:`sagaway.bench.soak_report`) gives each series' growth per hour and says
which grow where they should not.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from sagaway.bench.footprint import ProcessWatch, ProcFs
from sagaway.bench.growth import GrowthRule, summarize_all, warmup_end
from sagaway.bench.holdings import BrokerProbe, PostgresProbe, series_spec
from sagaway.bench.pacing import PaceTally, closed_loop, open_loop
from sagaway.bench.saga import invariants_line, prepared_run, run_invariants
from sagaway.bench.scrape import MetricsSource
from sagaway.bench.soak_report import (
    Capacity,
    Sample,
    SoakResult,
    format_soak_report,
    series_of,
    soak_exit_code,
)
from sagaway.bench.workload import BenchSetupError, RejectKind, Workload, WorkloadOptions

if TYPE_CHECKING:
    from _csv import Writer as _CsvWriter

# Units stocked per SKU (and credit for as many orders): more than any soak places, so
# that stock never runs out however long it runs.
STOCK_FOR = 20_000_000
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})


@dataclass(frozen=True, kw_only=True)
class SoakOptions:
    """What ``sagaway bench soak`` was asked to do.

    Attributes:
        url: Base URL of the running API.
        admin_token: Bearer token for ``/admin/*`` (stock and credit for the run).
        seconds: How long the steady load runs.
        rate: Orders per second; None measures the capacity first.
        load_fraction: Share of the measured capacity the steady load runs at.
        capacity_s: Length of the closed-loop burst that measures the capacity.
        clients: Clients of that burst, each with one saga in flight.
        max_in_flight: Most sagas the steady load waits for at once.
        sample_s: Time between two samples.
        timeout_s: How long one saga may take before it counts as a timeout.
        reject_every: Every K-th order is rejected (0: never).
        reject_kind: How (see :data:`sagaway.bench.workload.RejectKind`).
        database_url: The database under test.
        amqp_url: The broker under test.
        queues: The queues whose depth is sampled.
        retention_s: How long outbox and inbox rows are kept (``outbox``, ``inbox``).
        components: The components' ``/metrics``: each process is the one listening on
            that port (on this machine).
        pids: Further processes, by name.
        out: Where the samples are written (CSV: ``elapsed_s,series,value``).
    """

    url: str
    admin_token: str | None
    seconds: float
    rate: float | None = None
    load_fraction: float = 0.5
    capacity_s: float = 30.0
    clients: int = 100
    max_in_flight: int = 500
    sample_s: float = 30.0
    timeout_s: float = 120.0
    reject_every: int = 0
    reject_kind: RejectKind = "stock"
    database_url: str
    amqp_url: str
    queues: Sequence[str] = ()
    retention_s: Mapping[str, float] = field(
        default_factory=lambda: {"outbox": 3600.0, "inbox": 7 * 86400.0}
    )
    components: Sequence[MetricsSource] = ()
    pids: Mapping[str, Sequence[int]] = field(default_factory=dict)
    out: Path


def run_soak(options: SoakOptions) -> int:
    """Run the soak and print its report.

    Progress goes to stderr at every sample; the report to stdout.

    Returns:
        The exit code: 0 clean, 1 something grows, a saga failed, orders fell behind or
        an invariant broke, 2 setup impossible.
    """
    result = prepared_run(options.admin_token, lambda: soak(options))
    if result is None:
        return 2
    print(format_soak_report(result))
    print(invariants_line(result.problems))
    return soak_exit_code(result)


async def soak(options: SoakOptions) -> SoakResult:
    """Measure the capacity (unless given), run the steady load while sampling, check
    the invariants; returns what was seen.

    Raises:
        BenchSetupError: The system cannot be prepared or probed.
    """
    workload_options = WorkloadOptions(
        sagas=STOCK_FOR,
        concurrency=max(options.clients, options.max_in_flight),
        admin_token=options.admin_token,
        timeout_s=options.timeout_s,
        reject_every=options.reject_every,
        reject_kind=options.reject_kind,
    )
    orders = itertools.count()
    async with contextlib.AsyncExitStack() as stack:
        workload = await stack.enter_async_context(Workload(options.url, workload_options))
        try:
            database = await stack.enter_async_context(PostgresProbe(options.database_url))
            broker = await stack.enter_async_context(BrokerProbe(options.amqp_url, options.queues))
        except Exception as exc:  # the probes cannot start: nothing to soak
            raise BenchSetupError(f"cannot probe the system: {type(exc).__name__}: {exc}") from exc
        watch = _watch(options)
        _say(_watching(watch))
        rate, capacity = options.rate, Capacity(sagas_per_s=None)
        if rate is None:
            _say(
                f"measuring capacity: {options.clients} clients, closed loop, "
                f"{options.capacity_s:g} s"
            )
            measured, _ = await closed_loop(
                workload, seconds=options.capacity_s, clients=options.clients, orders=orders
            )
            capacity = Capacity(
                sagas_per_s=measured,
                clients=options.clients,
                seconds=options.capacity_s,
                fraction=options.load_fraction,
            )
            rate = measured * options.load_fraction
            _say(f"capacity {measured:.1f} sagas/s; steady load at {rate:.1f} sagas/s")
            if rate <= 0:
                raise BenchSetupError("no saga ended during the capacity burst")
        pace, samples, errors, seconds = await _steady(
            options, workload, watch, database, broker, rate=rate, orders=orders
        )
        problems = await run_invariants(options.database_url, workload.scope)
    rule = GrowthRule()
    series = series_of(samples)
    specs = {
        name: series_spec(
            name,
            outbox_retention_s=options.retention_s["outbox"],
            inbox_retention_s=options.retention_s["inbox"],
        )
        for name in series
    }
    return SoakResult(
        rate=rate,
        seconds=seconds,
        max_in_flight=options.max_in_flight,
        sample_s=options.sample_s,
        capacity=capacity,
        pace=pace,
        samples=samples,
        summaries=summarize_all(
            series, specs, rule=rule, sagas_per_s=pace.finished / seconds if seconds else None
        ),
        rule=rule,
        warmup_s=warmup_end([s.t_s for s in samples], rule),
        retention_s=options.retention_s,
        restarts=dict(watch.restarts),
        exited=list(watch.exited),
        sample_errors=errors,
        out=options.out,
        problems=problems,
        autovacuum=database.autovacuum,
    )


async def _steady(
    options: SoakOptions,
    workload: Workload,
    watch: ProcessWatch,
    database: PostgresProbe,
    broker: BrokerProbe,
    *,
    rate: float,
    orders: itertools.count[int],
) -> tuple[PaceTally, list[Sample], Counter[str], float]:
    """The open loop with a sample every ``sample_s``; returns the load's tally, the
    samples, the figures that could not be read, and how long orders were placed (less
    than asked when interrupted)."""
    pace, samples, errors = PaceTally(), [], Counter[str]()
    stop = _stop_on_interrupt()
    started = time.perf_counter()
    load = asyncio.create_task(
        open_loop(
            workload,
            pace,
            rate=rate,
            seconds=options.seconds,
            max_in_flight=options.max_in_flight,
            orders=orders,
            started=started,
            stop=stop,
        )
    )
    options.out.parent.mkdir(parents=True, exist_ok=True)
    with options.out.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(("elapsed_s", "series", "value"))
        for tick in itertools.count():
            due = started + min(tick * options.sample_s, options.seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - time.perf_counter()))
            sample = await _sample(time.perf_counter() - started, watch, database, broker, errors)
            samples.append(sample)
            _write(writer, out, sample)
            _say(_progress(sample, pace))
            if stop.is_set() or due >= started + options.seconds:
                break
    seconds = min(options.seconds, time.perf_counter() - started)
    _say(f"orders stopped; waiting for the {pace.in_flight} sagas in flight")
    await load
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
    return pace, samples, errors, seconds


async def _sample(
    t_s: float,
    watch: ProcessWatch,
    database: PostgresProbe,
    broker: BrokerProbe,
    errors: Counter[str],
) -> Sample:
    values = watch.sample()
    for name, probe in (("postgres", database), ("rabbitmq", broker)):
        try:
            values |= await probe.sample()
        except Exception as exc:  # down for a moment: the sample goes without it
            errors[f"{name} {type(exc).__name__}"] += 1
    return Sample(t_s=t_s, values=values)


def _write(writer: _CsvWriter, out: IO[str], sample: Sample) -> None:
    # Written as they come: an interrupted or crashed soak keeps what it saw.
    writer.writerows(
        (f"{sample.t_s:.1f}", name, f"{value:g}") for name, value in sorted(sample.values.items())
    )
    out.flush()


def _progress(sample: Sample, pace: PaceTally) -> str:
    values = sample.values

    def total(part: str) -> str:
        found = [v for name, v in values.items() if part in name]
        return f"{sum(found):.0f}" if found else "-"

    def per_process(figure: str) -> str:
        found = [
            f"{name.split('.')[1]} {v:.0f}"
            for name, v in sorted(values.items())
            if name.startswith("proc.") and name.endswith(figure)
        ]
        return "  ".join(found) or "-"

    return (
        f"[{sample.t_s:6.0f}s] placed {pace.placed}  ended {len(pace.sagas)}  "
        f"in flight {pace.in_flight}  behind {pace.behind}  failed {pace.failed} | "
        f"rss MB {per_process('.rss_mb')} | fds {per_process('.fds')} | "
        f"pg conns {values.get('pg.connections.database', 0):.0f} | "
        f"outbox {total('.outbox.rows')} (unpublished {total('.outbox.unpublished')})  "
        f"inbox {total('.inbox.rows.')}  queues {total('amqp.')}"
    )


def _watch(options: SoakOptions) -> ProcessWatch:
    ports: dict[str, int] = {}
    for source in options.components:
        parts = urlsplit(source.url)
        if (parts.hostname or "") in LOCAL_HOSTS:
            ports[source.name] = parts.port or (443 if parts.scheme == "https" else 80)
    database = make_url(options.database_url)
    amqp = urlsplit(options.amqp_url.split(",")[0])
    return ProcessWatch(
        ProcFs(),
        ports=ports,
        pids=options.pids,
        connection_ports={
            "pg_conns": database.port or 5432,
            "amqp_conns": amqp.port or (5671 if amqp.scheme == "amqps" else 5672),
        },
    )


def _watching(watch: ProcessWatch) -> str:
    found = ", ".join(
        f"{name} ({' '.join(map(str, pids))})"
        for name, pids in sorted(watch.processes.items())
        if pids
    )
    return f"watching processes: {found or 'none'}" + (
        f"; not running here: {', '.join(watch.missing)}" if watch.missing else ""
    )


def _stop_on_interrupt() -> asyncio.Event:
    """An event Ctrl-C sets: the load stops early and the report covers what ran."""
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    return stop


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
