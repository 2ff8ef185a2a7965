"""Keeps the outbox and inbox tables small: removes what is no longer needed.

Off the hot path: published outbox rows and inbox rows past their retention are
deleted in small batches, each its own short transaction, with ``SKIP LOCKED`` so
several janitors (one per relay) never wait on each other or on the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.outbox import metrics
from sagaway.outbox.transient import is_transient

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Retention:
    """How long rows are kept, and how the janitor paces itself.

    Attributes:
        outbox_s: how long published outbox rows are kept (for inspection).
        inbox_s: how long a consumer remembers a message id; must exceed the longest
            time a message can be redelivered (a relay lease plus broker requeues).
        batch: rows deleted per statement.
        interval_s: pause between two sweeps.
    """

    outbox_s: float = 3600.0
    inbox_s: float = 7 * 86400.0
    batch: int = 5000
    interval_s: float = 10.0


class Janitor:
    """Deletes published outbox rows and old inbox rows; refreshes backlog gauges."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        outboxes: Sequence[Table],
        inboxes: Sequence[Table],
        retention: Retention,
    ) -> None:
        self._engine = engine
        self._outboxes = tuple(outboxes)
        self._inboxes = tuple(inboxes)
        self._retention = retention

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every ``interval_s`` until ``stop``."""
        while not stop.is_set():
            try:
                await self.sweep()
                await self.measure()
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("janitor sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._retention.interval_s)

    async def sweep(self) -> int:
        """One pass over every table; returns how many rows were deleted."""
        total = 0
        for table in self._outboxes:
            total += await self._drain(
                table,
                f"""
                DELETE FROM {table.fullname} WHERE id IN (
                    SELECT id FROM {table.fullname}
                     WHERE published_at < now() - make_interval(secs => :keep)
                     ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)
                """,
                self._retention.outbox_s,
            )
        for table in self._inboxes:
            total += await self._drain(
                table,
                f"""
                DELETE FROM {table.fullname} WHERE (consumer, message_id) IN (
                    SELECT consumer, message_id FROM {table.fullname}
                     WHERE received_at < now() - make_interval(secs => :keep)
                     LIMIT :batch FOR UPDATE SKIP LOCKED)
                """,
                self._retention.inbox_s,
            )
        return total

    async def _drain(self, table: Table, sql: str, keep_s: float) -> int:
        deleted = 0
        statement = text(sql)
        while True:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    statement, {"keep": keep_s, "batch": self._retention.batch}
                )
            count = result.rowcount or 0
            deleted += count
            metrics.PURGED.labels(table.fullname).inc(count)
            if count < self._retention.batch:
                break
            await asyncio.sleep(0)  # let the relay's own work through between batches
        if deleted:
            log.info("old rows removed", table=table.fullname, rows=deleted)
        return deleted

    async def measure(self) -> None:
        """Refresh the backlog, oldest-unpublished and dead-row gauges."""
        async with self._engine.connect() as conn:
            for table in self._outboxes:
                row = (
                    await conn.execute(
                        text(
                            f"""
                            SELECT count(*) FILTER (WHERE dead_at IS NULL) AS backlog,
                                   count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
                                   coalesce(extract(epoch FROM now() - min(created_at)
                                            FILTER (WHERE dead_at IS NULL)), 0) AS oldest
                              FROM {table.fullname} WHERE published_at IS NULL
                            """
                        )
                    )
                ).one()
                metrics.BACKLOG.labels(table.fullname).set(row.backlog)
                metrics.DEAD_ROWS.labels(table.fullname).set(row.dead)
                metrics.OLDEST_SECONDS.labels(table.fullname).set(float(row.oldest))
