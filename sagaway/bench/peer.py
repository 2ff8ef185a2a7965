"""``sagaway bench --peer dbos``: the same workload on DBOS Transact, right after sagaway's.

The peer (:mod:`sagaway.bench_peer`) answers the same HTTP surface, so the same client
drives it with the same orders, concurrency and outcome mix. Its cost is read from
``/proc`` (its server process, PostgreSQL's and RabbitMQ's) since it has no ``/metrics``;
its invariants are checked in its own databases. ``ratio_to_dbos`` is sagaway's
throughput over the peer's, measured minutes apart on the same machine.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Literal

from sagaway.bench.saga import BenchOptions, BenchResult, measure

PeerMode = Literal["transactions", "steps"]
"""``transactions``: each step a DBOS datasource transaction, whose effect and recorded
output commit together (exactly once, like sagaway's inbox + effect + outbox);
``steps``: plain ``@DBOS.step`` functions (at least once)."""

PEER_PORT = 8931


def measure_peer(options: BenchOptions, *, mode: PeerMode, database_url: str) -> BenchResult:
    """Start the DBOS peer in databases of its own, run ``options``' workload on it,
    check its invariants, stop it.

    Raises:
        sagaway.bench_peer.server.PeerUnavailable: DBOS is not installed.
    """
    from sagaway.bench_peer.invariants import check_dbos_invariants
    from sagaway.bench_peer.server import start_dbos_peer

    with start_dbos_peer(database_url=database_url, port=PEER_PORT, mode=mode) as peer:
        on_peer = replace(
            options,
            url=peer.url,
            metrics=(),
            scrape=False,
            pids={f"dbos ({mode})": list(peer.pids)},
            # sagaway's database is not the peer's: its invariants are checked below.
            database_url=None,
        )
        result = asyncio.run(measure(on_peer))
        problems = check_dbos_invariants(database_url)
    return replace(result, problems=problems)


def ratio_line(ours: BenchResult, peer: BenchResult, mode: PeerMode) -> str:
    """``ratio_to_dbos: X.XX`` (throughput), with the CPU per saga of both beside it."""
    ours_rate = ours.tally.finished / ours.tally.wall_s if ours.tally.wall_s else 0.0
    peer_rate = peer.tally.finished / peer.tally.wall_s if peer.tally.wall_s else 0.0
    ratio = ours_rate / peer_rate if peer_rate else float("nan")
    ours_cpu, peer_cpu = total_cpu_ms(ours), total_cpu_ms(peer)
    cpu = (
        f"; CPU per saga {ours_cpu:.2f} ms vs {peer_cpu:.2f} ms"
        if ours_cpu is not None and peer_cpu is not None
        else ""
    )
    return (
        f"ratio_to_dbos: {ratio:.2f}  (sagaway {ours_rate:.1f} sagas/s, "
        f"DBOS {mode} {peer_rate:.1f} sagas/s{cpu})"
    )


def total_cpu_ms(result: BenchResult) -> float | None:
    """All processes' CPU per finished saga, the bench client excluded."""
    if not result.tally.finished:
        return None
    seconds = [row.usage.cpu_s for row in result.costs if row.usage is not None]
    if not seconds:
        return None
    return 1000 * sum(s for s in seconds if s is not None) / result.tally.finished
