"""The relay: moves committed outbox rows to RabbitMQ, at least once, in saga order."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import ARRAY, BigInteger, Row, Table, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.outbox import metrics
from sagaway.outbox.errors import BrokerUnavailable, PublishFailed
from sagaway.outbox.health import Health
from sagaway.outbox.publisher import Publisher, RawMessage
from sagaway.outbox.transient import is_transient
from sagaway.outbox.wakeup import Wakeup

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayOptions:
    """How the relay batches, paces and gives up.

    Attributes:
        batch_size: rows claimed at once.
        concurrency: claim-publish-mark loops per process; while one waits for its
            confirms another claims, so the broker link never idles.
        poll_interval_s: fallback poll while NOTIFY wake-ups arrive.
        unlistened_poll_s: poll interval while the LISTEN connection is down.
        lease_s: how long a claim holds; a relay that dies mid-batch releases its rows
            when it runs out.
        max_attempts: failed publishes of one row before it is parked as dead.
        retry_backoff_s: first delay before a failed row is tried again (doubling).
        retry_backoff_cap_s: longest such delay.
        outage_backoff_cap_s: longest pause while the broker or database is down.
    """

    batch_size: int = 500
    concurrency: int = 2
    poll_interval_s: float = 1.0
    unlistened_poll_s: float = 0.05
    lease_s: float = 30.0
    max_attempts: int = 10
    retry_backoff_s: float = 1.0
    retry_backoff_cap_s: float = 60.0
    outage_backoff_cap_s: float = 5.0


@dataclass(slots=True)
class _Outcome:
    published: list[int] = field(default_factory=list)
    failed: list[tuple[int, int, str]] = field(default_factory=list)  # id, attempts, error
    released: list[int] = field(default_factory=list)
    error: Exception | None = None  # raised once the batch is settled: the loop backs off


class Relay:
    """Claims unpublished rows under a lease, publishes them, marks them published.

    Claiming is a short transaction that stamps the rows with a lease and a fencing
    token; no transaction stays open while the broker is talked to. A row is marked
    published only after the broker confirmed it, and only if the claim is still this
    relay's, so a crash anywhere leaves it to be published again: delivery is at
    least once and consumers drop repeats by ``message_id``. A row is claimable only
    when no earlier row of its saga is unpublished (claimed, failing or dead
    included), so any number of relays keep each saga's messages in written order.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        tables: Sequence[Table],
        publisher: Publisher,
        options: RelayOptions,
        wakeup: Wakeup | None = None,
        health: Health | None = None,
    ) -> None:
        # Claim and mark are each one atomic statement; autocommit spares the BEGIN
        # and COMMIT round trips around them, which dominate an idle relay's latency.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._tables = tuple(tables)
        self._publisher = publisher
        self._options = options
        self._wakeup = wakeup
        self._health = health or Health()
        self._sql = {t.fullname: _Statements(t) for t in self._tables}

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; back off while the database or broker is down."""
        log.info(
            "relay started",
            tables=[t.fullname for t in self._tables],
            concurrency=self._options.concurrency,
        )
        await asyncio.gather(*(self._loop(stop) for _ in range(self._options.concurrency)))
        log.info("relay stopped")

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = self._options.unlistened_poll_s
        busy: set[str] = set()
        woken = False
        while not stop.is_set():
            targets = self._tables
            if self._wakeup is not None:
                self._wakeup.clear()
                notified = self._wakeup.take() if woken else None
                if notified is not None:
                    # Only the tables something was written to, plus those that just
                    # had work: publishing a saga's row can free its next one, which
                    # gets no notification of its own.
                    targets = tuple(
                        t for t in self._tables if t.schema in notified or t.fullname in busy
                    )
            try:
                moved, busy = await self._drain_tables(targets)
                backoff = self._options.unlistened_poll_s
                # A pass that raised nothing got through to the broker if it had
                # anything to publish. The probe asks the database itself, and the
                # connection's state tells it about an idle broker link.
                self._health.up("rabbitmq")
                self._health.up("relay")
            except BrokerUnavailable as exc:
                self._health.down("rabbitmq", str(exc))
                log.warning(
                    "broker unavailable, relay backing off", error=str(exc), delay_s=backoff
                )
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, self._options.outage_backoff_cap_s)
                continue
            except Exception as exc:
                if is_transient(exc):
                    log.warning(
                        "database unavailable, relay backing off",
                        error=type(exc).__name__,
                        delay_s=backoff,
                    )
                else:
                    # Rows stay unpublished whatever went wrong; keep going rather
                    # than leave the outbox undrained until someone restarts us.
                    self._health.down("relay", f"pass failed: {type(exc).__name__}")
                    log.exception("relay pass failed, backing off", delay_s=backoff)
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, self._options.outage_backoff_cap_s)
                continue
            woken = True
            if moved == 0:
                woken = await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> bool:
        """Wait for a notification or the fallback poll; True when notified."""
        listening = self._wakeup is not None and self._wakeup.listening
        timeout = self._options.poll_interval_s if listening else self._options.unlistened_poll_s
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        if self._wakeup is not None:
            waiters.append(asyncio.ensure_future(self._wakeup.wait()))
        done, pending = await asyncio.wait(
            waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()
        return bool(done)

    async def drain_once(self) -> int:
        """Publish what every table has ready, batch after batch; returns the count."""
        moved, _ = await self._drain_tables(self._tables)
        return moved

    async def _drain_tables(self, tables: Sequence[Table]) -> tuple[int, set[str]]:
        total = 0
        busy: set[str] = set()
        for table in tables:
            while True:
                moved, full = await self._drain_batch(table)
                total += moved
                if moved:
                    busy.add(table.fullname)
                if not full:
                    break
        return total, busy

    async def _drain_batch(self, table: Table) -> tuple[int, bool]:
        sql = self._sql[table.fullname]
        token = uuid.uuid4()
        async with self._engine.connect() as conn:
            result = await conn.execute(
                sql.claim,
                {"limit": self._options.batch_size, "lease": self._options.lease_s, "token": token},
            )
            rows = sorted(result.all(), key=lambda r: r.id)
        if not rows:
            return 0, False
        outcome = await self._publish(rows)
        async with self._engine.connect() as conn:
            if outcome.published:
                await conn.execute(sql.mark_published, {"ids": outcome.published, "token": token})
            if outcome.released:
                await conn.execute(sql.release, {"ids": outcome.released, "token": token})
            for row_id, attempts, error in outcome.failed:
                dead = attempts + 1 >= self._options.max_attempts
                delay = min(
                    self._options.retry_backoff_s * 2**attempts, self._options.retry_backoff_cap_s
                )
                await conn.execute(
                    sql.mark_failed,
                    {
                        "id": row_id,
                        "token": token,
                        "error": error[:1000],
                        "delay": delay,
                        "dead": dead,
                    },
                )
                if dead:
                    metrics.DEAD.labels(table.fullname).inc()
                    log.error(
                        "outbox message parked as dead",
                        table=table.fullname,
                        row_id=row_id,
                        attempts=attempts + 1,
                        error=error,
                    )
        if outcome.failed:
            log.warning(
                "messages not published, will retry",
                table=table.fullname,
                failures=[(i, e) for i, _, e in outcome.failed[:5]],
            )
        metrics.PUBLISHED.labels(table.fullname).inc(len(outcome.published))
        if outcome.error is not None:
            raise outcome.error
        return len(outcome.published), len(rows) >= self._options.batch_size

    async def _publish(self, rows: Sequence[Row[Any]]) -> _Outcome:
        messages = [
            RawMessage(
                # The claim returns the ids as text: no UUID objects to build and format.
                message_id=r.message_id,
                message_type=r.message_type,
                correlation_id=r.correlation_id,
                exchange=r.exchange,
                routing_key=r.routing_key,
                body=r.body,
                traceparent=r.traceparent,
            )
            for r in rows
        ]
        outcome = _Outcome()
        try:
            with metrics.PUBLISH_SECONDS.time():
                results = await self._publisher.publish_batch(messages)
        except Exception as exc:
            # Whatever broke, the rows go back at once rather than wait out the lease.
            outcome.released = [r.id for r in rows]
            outcome.error = exc
            return outcome
        confirmed_at = datetime.now(UTC)
        for row, result in zip(rows, results, strict=True):
            row_id: int = row.id
            if result is None:
                outcome.published.append(row_id)
                created_at: datetime = row.created_at
                metrics.LAG_SECONDS.observe(max(0.0, (confirmed_at - created_at).total_seconds()))
            elif isinstance(result, PublishFailed):
                outcome.failed.append((row_id, row.attempts, str(result)))
            else:
                # Not the message's fault: hand the row back at once, uncounted.
                outcome.released.append(row_id)
                outcome.error = result
        return outcome


class _Statements:
    """The relay's SQL for one outbox table, built once."""

    def __init__(self, table: Table) -> None:
        t = table.fullname
        ids = bindparam("ids", type_=ARRAY(BigInteger))
        # The NOT EXISTS sees rows another relay claimed but has not yet marked (they
        # are unpublished to us), so a later row of the same saga waits for them.
        self.claim = text(
            f"""
            WITH ready AS (
                SELECT o.id FROM {t} AS o
                 WHERE o.published_at IS NULL AND o.dead_at IS NULL
                   AND (o.claimed_until IS NULL OR o.claimed_until < now())
                   AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
                   AND NOT EXISTS (
                         SELECT 1 FROM {t} AS e
                          WHERE e.saga_id = o.saga_id
                            AND e.published_at IS NULL
                            AND e.id < o.id)
                 ORDER BY o.id
                 LIMIT :limit
                   FOR UPDATE OF o SKIP LOCKED)
            UPDATE {t} AS u
               SET claimed_until = now() + make_interval(secs => :lease),
                   claim_token = :token
              FROM ready
             WHERE u.id = ready.id
            RETURNING u.id, u.message_id::text, u.message_type, u.correlation_id::text,
                      u.exchange, u.routing_key, u.body, u.attempts, u.created_at,
                      u.traceparent
            """
        )
        # clock_timestamp(), not now(): the moment of marking, after the confirm, so
        # published_at - created_at is the real commit-to-publish delay.
        self.mark_published = text(
            f"""
            UPDATE {t}
               SET published_at = clock_timestamp(), attempts = attempts + 1,
                   claimed_until = NULL, claim_token = NULL, next_attempt_at = NULL
             WHERE id = ANY(:ids) AND claim_token = :token
            """
        ).bindparams(ids)
        self.release = text(
            f"""
            UPDATE {t} SET claimed_until = NULL, claim_token = NULL
             WHERE id = ANY(:ids) AND claim_token = :token
            """
        ).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))
        self.mark_failed = text(
            f"""
            UPDATE {t}
               SET attempts = attempts + 1, last_error = :error,
                   next_attempt_at = clock_timestamp() + make_interval(secs => :delay),
                   dead_at = CASE WHEN :dead THEN clock_timestamp() END,
                   claimed_until = NULL, claim_token = NULL
             WHERE id = :id AND claim_token = :token
            """
        )


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
