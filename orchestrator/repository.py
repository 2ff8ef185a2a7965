"""Saga persistence: the only code that reads or writes the ``sagas`` schema."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import literal, select, tuple_
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.state import Phase, SagaState, SagaStatus, StepState, StepStatus
from sagaway.orchestrator.tables import saga_events, sagas
from sagaway.outbox.deferred import defer_insert, defer_update, transaction_cache
from sagaway.outbox.tracing import inject

_LOCKED = "sagaway.sagas"


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga row: identity, business data and state (``traceparent``: the W3C trace
    context the saga was started in, if any)."""

    id: uuid.UUID
    saga_type: str
    order_id: uuid.UUID | None
    correlation_id: uuid.UUID
    data: dict[str, Any]
    state: SagaState
    version: int
    created_at: datetime
    updated_at: datetime
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a saga's history."""

    kind: str
    detail: str
    step: str | None = None
    message_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """A stored history line."""

    at: datetime
    kind: str
    step: str | None
    message_id: uuid.UUID | None
    detail: str


class SagaRepository:
    """Loads and saves sagas within the caller's session."""

    async def add(self, session: AsyncSession, record: SagaRecord) -> SagaRecord:
        """Insert a new saga (sent at commit with the rest), remembering the current
        trace context as its trace; returns the record as stored."""
        stored = replace(record, version=1, traceparent=inject())
        defer_insert(
            session,
            sagas,
            [
                {
                    "id": stored.id,
                    "saga_type": stored.saga_type,
                    "order_id": stored.order_id,
                    "correlation_id": stored.correlation_id,
                    "data": stored.data,
                    "created_at": stored.created_at,
                    "updated_at": stored.updated_at,
                    "version": stored.version,
                    "traceparent": stored.traceparent,
                    **_state_columns(stored.state),
                }
            ],
        )
        _known(session)[stored.id] = stored
        return stored

    async def get(
        self, session: AsyncSession, saga_id: uuid.UUID, *, for_update: bool = False
    ) -> SagaRecord | None:
        """The saga, optionally locked until the transaction ends.

        A saga this transaction already locked or saved is answered from memory, with
        the state it has in this transaction (its saved state is written at commit).
        """
        known = _known(session)
        if saga_id in known:
            return known[saga_id]
        query = select(sagas).where(sagas.c.id == saga_id)
        if for_update:
            # A row lock, not a version check: replies for one saga are rare and short,
            # and a lock lets a competing orchestrator wait instead of failing and
            # burning a redelivery.
            query = query.with_for_update()
        row = (await session.execute(query)).first()
        if row is None:
            return None
        record = _record(row)
        if for_update:
            known[saga_id] = record
        return record

    async def lock_many(self, session: AsyncSession, saga_ids: Sequence[uuid.UUID]) -> None:
        """Lock the given sagas in one statement, for a batch of replies.

        Rows are locked in id order, so two orchestrators locking overlapping batches
        wait for each other instead of deadlocking.
        """
        known = _known(session)
        wanted = sorted({i for i in saga_ids if i not in known})
        if not wanted:
            return
        rows = await session.execute(
            select(sagas).where(sagas.c.id.in_(wanted)).order_by(sagas.c.id).with_for_update()
        )
        for row in rows:
            known[row.id] = _record(row)

    async def save(
        self, session: AsyncSession, record: SagaRecord, state: SagaState, now: datetime
    ) -> SagaRecord:
        """Write the new state (and data: a step's output is merged into it) of a saga
        loaded ``for_update`` (sent at commit, one statement for every saga the
        transaction changed); returns the new record."""
        saved = replace(record, state=state, version=record.version + 1, updated_at=now)
        # Every deferred update of the table sets the same columns, so data goes too,
        # changed or not.
        defer_update(
            session,
            sagas,
            record.id,
            {
                "version": saved.version,
                "updated_at": now,
                "data": record.data,
                **_state_columns(state),
            },
        )
        _known(session)[record.id] = saved
        return saved

    async def record(
        self,
        session: AsyncSession,
        saga_id: uuid.UUID,
        entries: Sequence[HistoryEntry],
        now: datetime,
    ) -> None:
        """Append lines to the saga's history (sent at commit, with the others)."""
        defer_insert(
            session,
            saga_events,
            [
                {
                    "saga_id": saga_id,
                    "at": now,
                    "kind": e.kind,
                    "step": e.step,
                    "message_id": e.message_id,
                    "detail": e.detail[:2000],
                }
                for e in entries
            ],
        )

    async def history(self, session: AsyncSession, saga_id: uuid.UUID) -> list[HistoryRow]:
        """The saga's history, oldest first."""
        rows = await session.execute(
            select(saga_events).where(saga_events.c.saga_id == saga_id).order_by(saga_events.c.id)
        )
        return [HistoryRow(r.at, r.kind, r.step, r.message_id, r.detail) for r in rows]

    async def page(
        self,
        session: AsyncSession,
        *,
        status: SagaStatus | None,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[SagaRecord]:
        """Sagas newest first, ``limit`` at a time, strictly older than ``before``.

        Keyset pagination on ``(created_at, id)``: each page is an index range scan,
        as fast on page ten thousand as on page one.
        """
        query = select(sagas).order_by(sagas.c.created_at.desc(), sagas.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(sagas.c.status == status.value)
        if before is not None:
            created_at, saga_id = before
            query = query.where(
                tuple_(sagas.c.created_at, sagas.c.id)
                < tuple_(literal(created_at), literal(saga_id))
            )
        return [_record(r) for r in await session.execute(query)]

    async def claim_due(self, session: AsyncSession, now: datetime, limit: int) -> list[uuid.UUID]:
        """Lock up to ``limit`` sagas whose wake-up time has passed.

        ``SKIP LOCKED`` lets several orchestrators sweep at once without waiting for or
        double-handling each other's sagas.
        """
        rows = await session.execute(
            select(sagas.c.id)
            .where(sagas.c.wake_at.is_not(None), sagas.c.wake_at <= now)
            .order_by(sagas.c.wake_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [r.id for r in rows]


def _known(session: AsyncSession) -> dict[uuid.UUID, SagaRecord]:
    cache = transaction_cache(session)
    known = cache.get(_LOCKED)
    if known is None:
        known = cache[_LOCKED] = {}
    return known


def _state_columns(state: SagaState) -> dict[str, Any]:
    return {
        "status": state.status.value,
        "phase": state.phase.value,
        "cursor": state.cursor,
        "attempt": state.attempt,
        "pending_message_id": state.pending,
        "wake_at": state.wake_at,
        "failure_reason": state.failure_reason,
        "rejection_reason": state.rejection_reason,
        "steps": [_step_to_json(s) for s in state.steps],
    }


def _step_to_json(step: StepState) -> dict[str, Any]:
    return {
        "name": step.name,
        "status": step.status.value,
        "attempts": step.attempts,
        "compensation_attempts": step.compensation_attempts,
        "started_at": step.started_at.isoformat() if step.started_at else None,
        "finished_at": step.finished_at.isoformat() if step.finished_at else None,
        "error": step.error,
    }


def _step_from_json(raw: dict[str, Any]) -> StepState:
    return StepState(
        name=raw["name"],
        status=StepStatus(raw["status"]),
        attempts=raw["attempts"],
        compensation_attempts=raw.get("compensation_attempts", 0),
        started_at=datetime.fromisoformat(raw["started_at"]) if raw["started_at"] else None,
        finished_at=datetime.fromisoformat(raw["finished_at"]) if raw["finished_at"] else None,
        error=raw["error"],
    )


def _record(row: Row[Any]) -> SagaRecord:
    state = SagaState(
        status=SagaStatus(row.status),
        phase=Phase(row.phase),
        cursor=row.cursor,
        steps=tuple(_step_from_json(s) for s in row.steps),
        attempt=row.attempt,
        pending=row.pending_message_id,
        wake_at=row.wake_at,
        failure_reason=row.failure_reason,
        rejection_reason=row.rejection_reason,
    )
    return SagaRecord(
        id=row.id,
        saga_type=row.saga_type,
        order_id=row.order_id,
        correlation_id=row.correlation_id,
        data=row.data,
        state=state,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        traceparent=row.traceparent,
    )
