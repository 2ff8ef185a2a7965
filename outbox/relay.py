"""The relay: moves committed outbox rows to RabbitMQ, at least once, in saga order."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import Table, func, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox.errors import BrokerUnavailable, PublishFailed
from outbox.publisher import Publisher, RawMessage
from outbox.transient import is_transient

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayOptions:
    """How the relay batches and paces its work."""

    batch_size: int = 200
    poll_interval_s: float = 0.05
    max_backoff_s: float = 5.0


class Relay:
    """Claims unpublished rows with ``FOR UPDATE SKIP LOCKED`` and publishes them.

    A row is marked published only after the broker confirmed it, in the same
    transaction that holds its lock, so a crash at any point leaves it unpublished
    and it is sent again: delivery is at least once, and consumers drop repeats by
    ``message_id``. Several relays share the work: a claimed row is skipped by the
    others, and a row is only claimable when no earlier row of its saga is still
    unpublished, which keeps each saga's messages in the order they were written.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        tables: Sequence[Table],
        publisher: Publisher,
        options: RelayOptions,
    ) -> None:
        self._engine = engine
        self._tables = tuple(tables)
        self._publisher = publisher
        self._options = options

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; back off while the database or broker is down."""
        backoff = self._options.poll_interval_s
        log.info("relay started", tables=[t.fullname for t in self._tables])
        while not stop.is_set():
            try:
                moved = await self.drain_once()
                backoff = self._options.poll_interval_s
            except BrokerUnavailable as exc:
                log.warning(
                    "broker unavailable, relay backing off", error=str(exc), delay_s=backoff
                )
                moved = 0
                backoff = min(backoff * 2, self._options.max_backoff_s)
            except Exception as exc:
                if is_transient(exc):
                    log.warning(
                        "database unavailable, relay backing off",
                        error=type(exc).__name__,
                        delay_s=backoff,
                    )
                else:
                    # Rows stay unpublished whatever went wrong; keep going rather than
                    # leave the outbox undrained until someone restarts the relay.
                    log.exception("relay pass failed, backing off", delay_s=backoff)
                moved = 0
                backoff = min(backoff * 2, self._options.max_backoff_s)
            if moved == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
        log.info("relay stopped")

    async def drain_once(self) -> int:
        """One pass over every outbox table; returns how many rows were published."""
        total = 0
        for table in self._tables:
            total += await self._drain_batch(table)
        return total

    async def _drain_batch(self, table: Table) -> int:
        async with self._engine.connect() as conn, conn.begin():
            rows = await self._claim(conn, table)
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self._publisher.publish(row) for row in rows), return_exceptions=True
            )
            published: list[str] = []
            failed: list[tuple[str, str]] = []
            broker_down: BaseException | None = None
            for row, outcome in zip(rows, results, strict=True):
                if outcome is None:
                    published.append(row.message_id)
                elif isinstance(outcome, PublishFailed):
                    failed.append((row.message_id, str(outcome)))
                elif isinstance(outcome, BrokerUnavailable):
                    broker_down = outcome
                else:
                    raise outcome
            await self._mark(conn, table, published, failed)
        if failed:
            log.warning("messages not published", table=table.fullname, failures=failed[:5])
        if broker_down is not None:
            raise BrokerUnavailable(str(broker_down))
        if published:
            log.debug("published", table=table.fullname, count=len(published))
        return len(published)

    async def _claim(self, conn: AsyncConnection, table: Table) -> list[RawMessage]:
        # The NOT EXISTS sees rows another relay has locked but not yet marked (they
        # are still unpublished to us), so a later row of the same saga waits for them.
        result = await conn.execute(
            text(
                f"""
                SELECT o.message_id, o.message_type, o.correlation_id, o.exchange,
                       o.routing_key, o.body
                  FROM {table.fullname} AS o
                 WHERE o.published_at IS NULL
                   AND NOT EXISTS (
                         SELECT 1 FROM {table.fullname} AS e
                          WHERE e.saga_id = o.saga_id
                            AND e.published_at IS NULL
                            AND e.id < o.id)
                 ORDER BY o.id
                 LIMIT :limit
                   FOR UPDATE OF o SKIP LOCKED
                """
            ),
            {"limit": self._options.batch_size},
        )
        return [
            RawMessage(
                message_id=str(r.message_id),
                message_type=r.message_type,
                correlation_id=str(r.correlation_id),
                exchange=r.exchange,
                routing_key=r.routing_key,
                body=bytes(r.body),
            )
            for r in result
        ]

    async def _mark(
        self,
        conn: AsyncConnection,
        table: Table,
        published: list[str],
        failed: list[tuple[str, str]],
    ) -> None:
        if published:
            await conn.execute(
                update(table)
                .where(table.c.message_id.in_([uuid.UUID(m) for m in published]))
                .values(published_at=func.now(), attempts=table.c.attempts + 1)
            )
        for message_id, error in failed:
            await conn.execute(
                update(table)
                .where(table.c.message_id == uuid.UUID(message_id))
                .values(attempts=table.c.attempts + 1, last_error=error[:1000])
            )
