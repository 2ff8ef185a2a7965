"""``sagaway bench``: drive a running installation over HTTP and measure what a saga costs.

The workload (:mod:`sagaway.bench.workload`) gives throughput and latency. Around it, the
counters of every process are read before the run and after it has settled: each
component's CPU, PostgreSQL statements, transactions and round trips and AMQP
publishes and deliveries from its ``/metrics``; PostgreSQL's and RabbitMQ's CPU from
``/proc``. Their increase divided by the finished sagas is the cost block.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sagaway.bench.backends import DatabaseBackends
from sagaway.bench.cost import BackendCost, CostRow, backend_cost, cost_rows, format_cost
from sagaway.bench.invariants import find_problems
from sagaway.bench.meter import CostMeter
from sagaway.bench.proc import DEFAULT_GROUPS, CpuSampler
from sagaway.bench.report import exit_code, format_report
from sagaway.bench.scrape import MetricsSource, default_sources
from sagaway.bench.workload import (
    BenchSetupError,
    BenchTally,
    RunScope,
    Workload,
    WorkloadOptions,
)
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.settings import Settings

if TYPE_CHECKING:
    from sagaway.bench.peer import PeerMode

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What ``sagaway bench`` was asked to do.

    Attributes:
        url: Base URL of the running API.
        workload: The orders to place and how to wait for them.
        metrics: The ``/metrics`` to read; empty means :func:`default_sources` of ``url``.
        pids: Further processes whose CPU is read from ``/proc``, by name.
        proc_groups: Whether PostgreSQL's and RabbitMQ's processes are read from ``/proc``.
        database_url: The database under test, whose backends' CPU is shown apart from the
            whole server's, and whose saga invariants are checked; None does neither.
        scrape: Whether to read ``/metrics`` at all (a peer without any does not).
        peer: Also run the workload on the DBOS peer in this mode, right after.
    """

    url: str
    workload: WorkloadOptions
    metrics: Sequence[MetricsSource] = ()
    pids: Mapping[str, Sequence[int]] = field(default_factory=dict)
    proc_groups: bool = True
    database_url: str | None = None
    scrape: bool = True
    peer: PeerMode | None = None


@dataclass(frozen=True)
class BenchResult:
    """A finished run.

    Attributes:
        tally: What the workload recorded.
        costs: What each process used over the run.
        client_cpu_s: The bench client's own CPU over the run.
        backends: What the backends of the database under test used, if known.
        problems: The saga invariants the run broke (empty: all hold); None when they
            were not checked (no database to read).
    """

    tally: BenchTally
    costs: list[CostRow]
    client_cpu_s: float
    backends: BackendCost | None = None
    problems: list[str] | None = None

    def cost_block(self) -> str:
        """The cost block of the report, per finished saga."""
        return format_cost(
            self.costs,
            sagas=self.tally.finished,
            client_cpu_s=self.client_cpu_s,
            cores=os.cpu_count() or 0,
            backends=self.backends,
        )


def run_bench(options: BenchOptions) -> int:
    """Prepare stock and credit, run the benchmark, print the report.

    Progress goes to stderr every ~2 s; the report goes to stdout.

    Args:
        options: What to run.

    Returns:
        The process exit code: 0 clean, 1 timeouts or HTTP errors, 2 setup impossible.
    """
    result = prepared_run(options.workload.admin_token, lambda: measure(options))
    if result is None:
        return 2
    print(format_report(result.tally, options.workload))
    print(result.cost_block())
    print(invariants_line(result.problems))
    code = 1 if result.problems else exit_code(result.tally)
    if options.peer is None:
        return code
    from sagaway.bench.peer import measure_peer, ratio_line

    print(f"\n--- the same workload on DBOS Transact ({options.peer}) ---", flush=True)
    try:
        peer = measure_peer(
            options,
            mode=options.peer,
            database_url=options.database_url or Settings().database_url,
        )
    except BenchSetupError as exc:
        print(f"bench: the peer could not be prepared: {exc}", file=sys.stderr)
        return 2
    print(format_report(peer.tally, options.workload))
    print(peer.cost_block())
    print(invariants_line(peer.problems))
    print(ratio_line(result, peer, options.peer))
    return max(code, 1 if peer.problems else exit_code(peer.tally))


def prepared_run(admin_token: str | None, main: Callable[[], Coroutine[Any, Any, T]]) -> T | None:
    """Run a bench's ``main`` if it can prepare the system under test.

    Returns:
        What ``main`` returned; None, said on stderr, when no admin token was given
        (stock and credit cannot be prepared) or the system could not be prepared.
    """
    if not admin_token:
        print(
            "bench: an admin token is needed to prepare bench stock and credit: "
            "pass --admin-token or set SAGAWAY_ADMIN_TOKEN",
            file=sys.stderr,
        )
        return None
    try:
        return asyncio.run(main())
    except BenchSetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return None


def invariants_line(problems: Sequence[str] | None) -> str:
    """The report's verdict on the saga invariants of the run."""
    if problems is None:
        return "invariants: not checked (no --database-url)"
    if not problems:
        return "invariants: hold (stock, credit, one saga per order, every saga settled)"
    shown = "\n  ".join(problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return f"invariants: {len(problems)} BROKEN\n  {shown}{more}"


async def measure(options: BenchOptions) -> BenchResult:
    """Run the workload between two snapshots of every process's counters.

    Raises:
        BenchSetupError: The system cannot be prepared for the run.
    """
    sources = (options.metrics or default_sources(options.url)) if options.scrape else ()
    cpu = CpuSampler(comm_groups=DEFAULT_GROUPS if options.proc_groups else {}, pids=options.pids)
    database = DatabaseBackends(options.database_url) if options.database_url else None
    async with (
        Workload(options.url, options.workload, progress_to=sys.stderr) as workload,
        contextlib.AsyncExitStack() as stack,
    ):
        backends = await stack.enter_async_context(database) if database is not None else None
        meter = await stack.enter_async_context(CostMeter(sources, cpu, backends))
        before = await meter.snapshot()
        client_before = _own_cpu_s()
        tally = await workload.run()
        client_cpu_s = _own_cpu_s() - client_before
        after = await meter.settled_snapshot()
        scope = workload.scope
    problems = None
    if options.database_url:
        problems = await run_invariants(options.database_url, scope)
    return BenchResult(
        tally=tally,
        costs=cost_rows(before, after),
        client_cpu_s=client_cpu_s,
        backends=backend_cost(before, after, database.database) if database else None,
        problems=problems,
    )


async def run_invariants(database_url: str, scope: RunScope) -> list[str]:
    """The saga invariants the run broke, read from the database under test."""
    engine = create_engine(database_url, pool_size=1)
    try:
        return await find_problems(
            session_factory(engine),
            stock_totals=scope.stock_totals,
            customers_used=scope.customers,
        )
    finally:
        await engine.dispose()


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system
