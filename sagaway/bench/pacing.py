"""The load of a soak: a closed-loop burst that measures capacity, then an open loop.

Closed loop (``sagaway bench`` itself): each client places its next order when its last
saga ended, so the load adapts to the system and the rate reached is its capacity.
Open loop: orders are due at a fixed rate whatever the latency, as independent users
would place them. A saga's latency counts from when its order was due, so a late start
is not hidden. At most ``max_in_flight`` sagas are waited for at once: an order due
while that many are in flight is not placed, and counted as ``behind``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from sagaway.bench.stats import LatencyStats, summarize
from sagaway.bench.workload import TERMINAL_STATUSES, BenchTally, SagaOutcome, Workload


@dataclass(frozen=True)
class DueSaga:
    """One saga of an open loop: when its order was due and how it ended.

    Attributes:
        due_s: Seconds since the load began.
        outcome: How it ended.
    """

    due_s: float
    outcome: SagaOutcome


@dataclass
class PaceTally:
    """What an open loop did so far; mutated only from the event loop's thread.

    Attributes:
        tally: Per-saga figures, as ``sagaway bench`` records them.
        sagas: Every saga that ended, with when it was due.
        placed: Orders placed.
        behind: Orders not placed because ``max_in_flight`` sagas were in flight.
        max_lag_s: How late, at worst, an order was placed after it was due (the client
            itself falling behind).
        in_flight: Sagas placed and not ended yet.
    """

    tally: BenchTally = field(default_factory=BenchTally)
    sagas: list[DueSaga] = field(default_factory=list)
    placed: int = 0
    behind: int = 0
    max_lag_s: float = 0.0
    in_flight: int = 0

    @property
    def finished(self) -> int:
        """Sagas that reached a terminal state."""
        return sum(1 for s in self.sagas if s.outcome.status in TERMINAL_STATUSES)

    @property
    def failed(self) -> int:
        """Sagas that timed out or ended in an HTTP error."""
        return sum(1 for s in self.sagas if s.outcome.status not in TERMINAL_STATUSES)


async def closed_loop(
    workload: Workload, *, seconds: float, clients: int, orders: Iterator[int]
) -> tuple[float, BenchTally]:
    """``clients`` clients, each one saga at a time, for ``seconds``.

    Returns:
        Sagas finished per second (from the first order to the last saga's end), and the
        tally.
    """
    tally = BenchTally()
    started = time.perf_counter()
    deadline = started + seconds

    async def client() -> None:
        # The clients share one iterator; safe because next() never awaits.
        while time.perf_counter() < deadline:
            await workload.saga(next(orders), tally)

    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            group.create_task(client())
    tally.wall_s = time.perf_counter() - started
    return (tally.finished / tally.wall_s if tally.wall_s > 0 else 0.0), tally


async def open_loop(
    workload: Workload,
    pace: PaceTally,
    *,
    rate: float,
    seconds: float,
    max_in_flight: int,
    orders: Iterator[int],
    started: float,
    stop: asyncio.Event,
) -> None:
    """Place orders at ``rate`` per second from ``started`` (``time.perf_counter()``)
    for ``seconds`` (or until ``stop``), then wait for the sagas still in flight.

    Args:
        workload: Places an order and waits for its saga.
        pace: Where progress is recorded, readable while the loop runs.
        rate: Orders per second.
        seconds: How long orders are placed.
        max_in_flight: Most sagas waited for at once.
        orders: Order numbers (see :func:`sagaway.bench.workload.order_body`).
        started: When the first order is due.
        stop: Set to end the load early.
    """
    interval = 1.0 / rate
    running: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        outcome = await workload.saga(next(orders), pace.tally, t0=due)
        pace.sagas.append(DueSaga(due - started, outcome))
        pace.in_flight -= 1

    tick = 0
    while not stop.is_set():
        due = started + tick * interval
        if due >= started + seconds:
            break
        tick += 1
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        pace.max_lag_s = max(pace.max_lag_s, time.perf_counter() - due)
        if pace.in_flight >= max_in_flight:
            pace.behind += 1
            continue
        pace.placed += 1
        pace.in_flight += 1
        task = asyncio.create_task(one(due))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)


@dataclass(frozen=True)
class Window:
    """Latency of the sagas due in one part of the load.

    Attributes:
        start_s: Where the part begins, seconds since the load began.
        end_s: Where it ends.
        stats: Latency of the sagas that ended there (None: none did).
        failed: Sagas due there that timed out or ended in an HTTP error.
    """

    start_s: float
    end_s: float
    stats: LatencyStats | None
    failed: int


def windows(sagas: Sequence[DueSaga], *, seconds: float, parts: int = 4) -> list[Window]:
    """Latency of the sagas due in each of ``parts`` equal parts of ``seconds``, so the
    end of a soak can be compared with its beginning."""
    width = seconds / parts
    found = []
    for part in range(parts):
        start, end = part * width, (part + 1) * width
        last = part == parts - 1
        inside = [s for s in sagas if start <= s.due_s < end or (last and s.due_s >= end)]
        ended = [
            s.outcome.latency_ms
            for s in inside
            if s.outcome.status in TERMINAL_STATUSES and s.outcome.latency_ms is not None
        ]
        failed = sum(1 for s in inside if s.outcome.status not in TERMINAL_STATUSES)
        found.append(Window(start_s=start, end_s=end, stats=summarize(ended), failed=failed))
    return found
