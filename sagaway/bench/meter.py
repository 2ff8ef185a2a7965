"""Snapshots of every process's counters: ``/metrics`` scrapes and ``/proc`` CPU."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType

import httpx

from sagaway.bench.backends import DatabaseBackends
from sagaway.bench.cost import Snapshot, Usage, usage_of
from sagaway.bench.proc import CpuSampler
from sagaway.bench.scrape import MetricsSource, scrape

SETTLE_INTERVAL_S = 0.5
SETTLE_MAX_S = 10.0


class CostMeter:
    """Takes :class:`Snapshot` of the given ``/metrics`` sources and ``/proc`` groups.

    Args:
        sources: The components' ``/metrics`` (several of one name add up).
        cpu: The processes read from ``/proc``; None reads none.
        backends: The database whose backends' CPU is read (with ``cpu``'s ``/proc``).
    """

    def __init__(
        self,
        sources: Sequence[MetricsSource],
        cpu: CpuSampler | None,
        backends: DatabaseBackends | None = None,
    ) -> None:
        self._sources = tuple(sources)
        self._cpu = cpu
        self._backends = backends
        self._client = httpx.AsyncClient(timeout=10.0)

    async def __aenter__(self) -> CostMeter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def snapshot(self) -> Snapshot:
        """Every source's counters now."""
        scrapes = await asyncio.gather(*(scrape(self._client, s.url) for s in self._sources))
        components: dict[str, Usage | None] = {}
        for source, samples in zip(self._sources, scrapes, strict=True):
            usage = usage_of(samples) if samples is not None else None
            if source.name not in components:
                components[source.name] = usage
            else:
                known = components[source.name]
                components[source.name] = None if known is None or usage is None else known + usage
        processes = self._cpu.sample() if self._cpu is not None else {}
        pids = await self._backends.pids() if self._backends is not None else None
        backends = self._cpu.per_pid(pids) if self._cpu is not None and pids else None
        return Snapshot(components=components, processes=processes, backends=backends)

    async def settled_snapshot(self) -> Snapshot:
        """A snapshot taken once no message is moving any more.

        A saga is terminal for the client before the last messages it caused are all
        delivered and acknowledged (the reply that ended it, a notification); waiting
        until publishes and deliveries stop changing counts that work in the run.
        Gives up waiting after ``SETTLE_MAX_S``.
        """
        deadline = time.monotonic() + SETTLE_MAX_S
        last = await self.snapshot()
        while time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_INTERVAL_S)
            now = await self.snapshot()
            if _traffic(now) == _traffic(last):
                return now
            last = now
        return last


def _traffic(snapshot: Snapshot) -> tuple[float | None, ...]:
    return tuple(
        None if u is None else (u.publishes or 0.0) + (u.deliveries or 0.0)
        for u in snapshot.components.values()
    )
