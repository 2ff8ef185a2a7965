"""Handoff: the process that commits outbox rows publishes them itself, right after.

Going through the relay costs every message a NOTIFY, a wake-up of another process, a
claim and a mark: two round trips to PostgreSQL and a hop of latency, for rows the
committing process had in its hands all along. A consumer (orchestrator or participant)
therefore writes its rows *already claimed* by itself, under a short lease and a token
of its own; after the commit it publishes them with confirms and marks them published
under that token, in one statement.

The relay stays the safety net and the single owner of every hard case. A row whose
publish fails (broker down, message refused) is released at once for the relay to
retry, park as dead and so on; a row whose process died after the commit is left to
its lease, after which the relay claims it like any other. Either way delivery stays at
least once (consumers drop repeats by ``message_id``). A handoff does not wait for an
earlier unpublished row of its saga, as the relay does: a consumer writes a saga's
next row only in answer to a delivered message, so such a row can only be a reply to
an attempt the saga already gave up on, which is stale whenever it arrives.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ARRAY, Table, Uuid, bindparam, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from sagaway.outbox import metrics
from sagaway.outbox.deferred import committed_inserts
from sagaway.outbox.publisher import Publisher, RawMessage

log = structlog.get_logger(__name__)

_KEY = "sagaway.handoff"


@dataclass(slots=True)
class HandoffBatch:
    """The rows one transaction wrote claimed by this process (filled at its commit)."""

    token: uuid.UUID
    claimed_until: datetime
    rows: list[tuple[Table, dict[str, Any]]] = field(default_factory=list)


class Handoff:
    """Publishes a consumer transaction's outbox rows after it commits.

    Args:
        engine: For the mark (autocommit: one round trip, no BEGIN/COMMIT).
        publisher: A confirming publisher on this process's broker connection.
        lease_s: How long the rows stay claimed by this process; past it a relay
            publishes them (a process that died after its commit delays them this long).
    """

    def __init__(self, *, engine: AsyncEngine, publisher: Publisher, lease_s: float) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._publisher = publisher
        self._lease = timedelta(seconds=lease_s)
        self._sql: dict[str, _Statements] = {}

    def start(self, session: AsyncSession) -> HandoffBatch:
        """Claim, for this process, every outbox row the session's transaction writes."""
        batch = HandoffBatch(token=uuid.uuid4(), claimed_until=datetime.now(UTC) + self._lease)
        session.sync_session.info[_KEY] = batch
        return batch

    async def publish(self, batch: HandoffBatch) -> None:
        """Publish the committed rows, then mark them published (or hand them back)."""
        if not batch.rows:
            return
        by_table: dict[str, tuple[Table, list[dict[str, Any]]]] = {}
        for table, row in batch.rows:
            by_table.setdefault(table.fullname, (table, []))[1].append(row)
        for table, rows in by_table.values():
            await self._publish_table(table, rows, batch.token)

    async def _publish_table(
        self, table: Table, rows: Sequence[Mapping[str, Any]], token: uuid.UUID
    ) -> None:
        sql = self._sql.get(table.fullname)
        if sql is None:
            sql = self._sql[table.fullname] = _Statements(table)
        messages = [
            RawMessage(
                message_id=str(r["message_id"]),
                message_type=r["message_type"],
                correlation_id=str(r["correlation_id"]),
                exchange=r["exchange"],
                routing_key=r["routing_key"],
                body=r["body"],
                traceparent=r["traceparent"],
            )
            for r in rows
        ]
        results: list[object]
        try:
            results = list(await self._publisher.publish_batch(messages))
        except Exception as exc:
            results = [exc] * len(messages)
        done = [r["message_id"] for r, res in zip(rows, results, strict=True) if res is None]
        back = [r["message_id"] for r, res in zip(rows, results, strict=True) if res is not None]
        try:
            async with self._engine.connect() as conn:
                if done:
                    await conn.execute(sql.mark_published, {"ids": done, "token": token})
                if back:
                    # The relay retries them, with its backoff and dead-row rules.
                    await conn.execute(sql.release, {"ids": back, "token": token})
        except Exception as exc:
            # Never the consumer's problem: the rows' lease runs out and the relay
            # publishes them again (a repeat the next consumer drops).
            log.warning(
                "handoff could not mark its rows, the relay will resend them",
                table=table.fullname,
                count=len(rows),
                error=type(exc).__name__,
            )
        metrics.PUBLISHED.labels(table.fullname).inc(len(done))
        if back:
            errors = {type(r).__name__ for r in results if r is not None}
            log.warning(
                "handoff publish failed, left to the relay",
                table=table.fullname,
                count=len(back),
                errors=sorted(errors),
            )


def claim_columns(session: AsyncSession) -> dict[str, Any]:
    """The claim to stamp on outbox rows written in this session, if it hands off."""
    batch = session.sync_session.info.get(_KEY)
    if not isinstance(batch, HandoffBatch):
        return {}
    return {"claimed_until": batch.claimed_until, "claim_token": batch.token}


def _take_committed(session: Session) -> None:
    # The rows this transaction wrote claimed by its batch, now that they exist.
    batch = session.info.get(_KEY)
    if isinstance(batch, HandoffBatch):
        for table, rows in committed_inserts(session):
            batch.rows.extend((table, r) for r in rows if r.get("claim_token") == batch.token)


def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_KEY, None)


event.listen(Session, "after_commit", _take_committed)
event.listen(Session, "after_transaction_end", _forget)


class _Statements:
    def __init__(self, table: Table) -> None:
        t = table.fullname
        ids = bindparam("ids", type_=ARRAY(Uuid))
        self.mark_published = text(
            f"""
            UPDATE {t}
               SET published_at = clock_timestamp(), attempts = attempts + 1,
                   claimed_until = NULL, claim_token = NULL
             WHERE message_id = ANY(:ids) AND claim_token = :token
            """
        ).bindparams(ids)
        self.release = text(
            f"""
            UPDATE {t} SET claimed_until = NULL, claim_token = NULL
             WHERE message_id = ANY(:ids) AND claim_token = :token
            """
        ).bindparams(ids)
