"""Measure the DBOS peer alone: ``python -m sagaway.bench_peer.load --mode transactions``.

A small driver for tuning the peer before it runs beside sagaway in ``sagaway bench``:
it starts the peer on fresh databases, places ``--sagas`` orders with ``--concurrency``
in flight (every ``--reject-every``-th for a customer with no credit, so it is rejected
with ``insufficient_funds`` and compensated), then ``--serial`` orders one at a time,
and prints sagas/s, POST→terminal latency and CPU per saga of the peer process and of
every ``postgres`` process (utime + stime from /proc). Run it under the CPU lock.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import cast

import httpx

from sagaway.bench_peer.databases import DEFAULT_PREFIX
from sagaway.bench_peer.invariants import check_dbos_invariants
from sagaway.bench_peer.server import start_dbos_peer
from sagaway.bench_peer.tuning import (
    ISOLATION_LEVELS,
    MODES,
    STYLES,
    IsolationLevel,
    PeerTuning,
    Style,
)

SKUS = tuple(f"LOAD-{n}" for n in range(1, 11))
GOOD_CUSTOMER = "load-good"
BROKE_CUSTOMER = "load-broke"
TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
TRANSPORT_ATTEMPTS = 3


@dataclass
class Tally:
    """What one phase recorded."""

    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    wall_s: float = 0.0


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the given processes, in seconds (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / TICKS_PER_S


def postgres_pids() -> list[int]:
    """Every process whose command name is ``postgres``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def postgres_cpu_seconds() -> float:
    """CPU seconds of every ``postgres`` process alive now."""
    return cpu_seconds(postgres_pids())


def machine_busy() -> tuple[float, float]:
    """Seconds of all CPUs since boot: (busy, total), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICKS_PER_S, sum(values) / TICKS_PER_S


def nearest_rank(samples: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


async def run_phase(
    client: httpx.AsyncClient, *, sagas: int, concurrency: int, reject_every: int
) -> Tally:
    """Place ``sagas`` orders, ``concurrency`` at a time, each awaited until terminal."""
    tally = Tally()
    orders = iter(range(sagas))

    async def worker() -> None:
        for index in orders:
            broke = reject_every > 0 and (index + 1) % reject_every == 0
            body = {
                "customer_id": BROKE_CUSTOMER if broke else GOOD_CUSTOMER,
                "items": [{"sku": SKUS[index % len(SKUS)], "quantity": 1, "unit_price_cents": 100}],
                "currency": "USD",
            }
            # As the bench does: an idempotency key, so a POST lost in transport is retried.
            key = {"Idempotency-Key": f"load-{uuid.uuid4()}"}
            t0 = time.perf_counter()
            posted = await _retried(partial(client.post, "/orders", json=body, headers=key), tally)
            if posted.status_code != 202:
                tally.outcomes[f"POST {posted.status_code}"] += 1
                continue
            path = f"/sagas/{posted.json()['saga_id']}"
            while True:
                answer = await _retried(partial(client.get, path, params={"wait_s": 30}), tally)
                status = answer.json()["status"]
                if status in TERMINAL:
                    break
            tally.latencies_ms.append((time.perf_counter() - t0) * 1000)
            tally.outcomes[status] += 1

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, sagas)):
            group.create_task(worker())
    tally.wall_s = time.perf_counter() - started
    return tally


async def _retried(send: Callable[[], Awaitable[httpx.Response]], tally: Tally) -> httpx.Response:
    for attempt in range(1, TRANSPORT_ATTEMPTS + 1):
        tally.requests += 1
        try:
            return await send()
        except httpx.TransportError as exc:
            if attempt == TRANSPORT_ATTEMPTS:
                raise
            tally.retries[type(exc).__name__] += 1
    raise AssertionError("unreachable")


async def drive(url: str, pids: Sequence[int], args: argparse.Namespace) -> list[str]:
    """Prepare stock and credit, warm up, run the loaded and the serial phase."""
    # A connection uvicorn closes while idle (after 5 s) fails the next request sent on
    # it; _retried sends that again (the POST with its idempotency key).
    limits = httpx.Limits(
        max_connections=args.concurrency,
        max_keepalive_connections=args.concurrency,
        keepalive_expiry=args.keepalive_s,
    )
    lines = []
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        total = args.sagas + args.serial + args.warmup
        for sku in SKUS:
            await client.put(f"/admin/inventory/{sku}", json={"available": total})
        await client.put(f"/admin/customers/{GOOD_CUSTOMER}", json={"credit_limit_cents": 10**12})
        await client.put(f"/admin/customers/{BROKE_CUSTOMER}", json={"credit_limit_cents": 0})
        await run_phase(client, sagas=args.warmup, concurrency=10, reject_every=args.reject_every)

        peer0, pg0, me0 = cpu_seconds(pids), postgres_cpu_seconds(), cpu_seconds([os.getpid()])
        busy0, all0 = machine_busy()
        loaded = await run_phase(
            client, sagas=args.sagas, concurrency=args.concurrency, reject_every=args.reject_every
        )
        peer_ms = (cpu_seconds(pids) - peer0) * 1000 / args.sagas
        pg_ms = (postgres_cpu_seconds() - pg0) * 1000 / args.sagas
        me_ms = (cpu_seconds([os.getpid()]) - me0) * 1000 / args.sagas
        busy1, all1 = machine_busy()
        lines += [
            f"loaded: {args.sagas} sagas, {args.concurrency} in flight, wall {loaded.wall_s:.2f} s",
            f"  throughput: {args.sagas / loaded.wall_s:.1f} sagas/s",
            f"  POST->terminal p50 {nearest_rank(loaded.latencies_ms, 50):.1f} ms"
            f"  p99 {nearest_rank(loaded.latencies_ms, 99):.1f} ms",
            f"  CPU per saga: peer {peer_ms:.1f} ms, postgres {pg_ms:.1f} ms"
            f" (this load client {me_ms:.1f} ms)",
            f"  machine busy: {100 * (busy1 - busy0) / (all1 - all0):.0f}% of all CPUs",
            f"  outcomes: {dict(sorted(loaded.outcomes.items()))}",
            f"  requests: {loaded.requests}, retried: {dict(loaded.retries)}",
        ]
        if args.serial:
            serial = await run_phase(client, sagas=args.serial, concurrency=1, reject_every=0)
            lines += [
                f"one at a time: {args.serial} sagas, {args.serial / serial.wall_s:.1f} sagas/s",
                f"  POST->terminal p50 {nearest_rank(serial.latencies_ms, 50):.1f} ms"
                f"  p99 {nearest_rank(serial.latencies_ms, 99):.1f} ms",
            ]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Run the measurement and print it."""
    parser = argparse.ArgumentParser(prog="python -m sagaway.bench_peer.load")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/sagaway"
    )
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--reject-every", type=int, default=10)
    parser.add_argument("--serial", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--keepalive-s",
        type=float,
        default=30.0,
        help="idle connections kept this long; the bench's 2 s costs this client more CPU",
    )
    defaults = PeerTuning()
    parser.add_argument("--sys-db-pool-size", type=int, default=defaults.sys_db_pool_size)
    parser.add_argument("--app-pool-size", type=int, default=defaults.app_pool_size)
    parser.add_argument("--max-executor-threads", type=int, default=defaults.max_executor_threads)
    parser.add_argument(
        "--isolation-level", choices=ISOLATION_LEVELS, default=defaults.isolation_level
    )
    parser.add_argument(
        "--sys-db-pre-ping", action=argparse.BooleanOptionalAction, default=defaults.sys_db_pre_ping
    )
    parser.add_argument("--style", choices=STYLES, default=defaults.style)
    args = parser.parse_args(argv)
    tuning = PeerTuning(
        style=cast(Style, args.style),
        sys_db_pool_size=args.sys_db_pool_size,
        app_pool_size=args.app_pool_size,
        max_executor_threads=args.max_executor_threads,
        isolation_level=cast(IsolationLevel, args.isolation_level),
        sys_db_pre_ping=args.sys_db_pre_ping,
    )
    with start_dbos_peer(
        database_url=args.database_url,
        port=args.port,
        mode=args.mode,
        prefix=args.prefix,
        tuning=tuning,
    ) as peer:
        lines = asyncio.run(drive(peer.url, peer.pids, args))
        problems = check_dbos_invariants(args.database_url, prefix=args.prefix)
    print(f"DBOS peer, mode {args.mode}, {tuning}")
    print("\n".join(lines))
    print("invariants: " + ("hold" if not problems else "; ".join(problems)))


if __name__ == "__main__":
    main()
