"""Saga persistence: the only code that reads or writes the ``sagas`` schema."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import literal, select, tuple_, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.history import HistoryEntry, HistoryKind, HistoryRow, Purpose
from sagaway.orchestrator.state import Phase, SagaState, SagaStatus, StepState, StepStatus
from sagaway.orchestrator.tables import saga_events, sagas
from sagaway.outbox.deferred import defer_insert, defer_update, transaction_cache
from sagaway.outbox.tracing import inject

_LOCKED = "sagaway.sagas"


# The typed history columns, in HistoryEntry's field names.
_HISTORY_FIELDS = (
    "kind",
    "step",
    "attempt",
    "purpose",
    "outcome",
    "reason",
    "message_type",
    "participant",
    "handler",
    "message_id",
    "actor",
    "delay_s",
    "note",
)

_KINDS = frozenset(k.value for k in HistoryKind)
_PURPOSES = frozenset(p.value for p in Purpose)


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga row: identity, business data and state (``traceparent``: the W3C trace
    context the saga was started in, if any; ``definition_*``: the version, fingerprint
    and shape of the definition it runs under, None when recorded before versions)."""

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
    definition_version: int | None = None
    definition_fingerprint: str | None = None
    definition_shape: tuple[str, ...] | None = None


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
                    **_definition_columns(stored),
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
        record = record_from_row(row)
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
            known[row.id] = record_from_row(row)

    async def save(
        self, session: AsyncSession, record: SagaRecord, state: SagaState, now: datetime
    ) -> SagaRecord:
        """Write the new state of a saga loaded ``for_update`` (sent at commit, one
        statement for every saga the transaction changed); returns the new record.

        Data and the recorded definition change rarely (a step's output, a definition
        the saga moved onto) and are written when they do, by :meth:`set_data` and
        :meth:`set_definition`: every deferred update of a table must set the same
        columns, and these would cost each state change their serialization.
        """
        saved = replace(record, state=state, version=record.version + 1, updated_at=now)
        defer_update(
            session,
            sagas,
            record.id,
            {"version": saved.version, "updated_at": now, **_state_columns(state)},
        )
        _known(session)[record.id] = saved
        return saved

    async def set_data(self, session: AsyncSession, record: SagaRecord) -> None:
        """Write the saga's data now (a step's output was merged into it)."""
        await session.execute(update(sagas).where(sagas.c.id == record.id).values(data=record.data))

    async def set_definition(self, session: AsyncSession, record: SagaRecord) -> None:
        """Write the definition the saga now runs under (it moved onto a new one) with
        its steps realigned to it: the two always change together, even on a path that
        then leaves the state as it is (a stale reply, a wake-up with nothing due)."""
        await session.execute(
            update(sagas)
            .where(sagas.c.id == record.id)
            .values(**_definition_columns(record), **_state_columns(record.state))
        )

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
            [{"saga_id": saga_id, "at": now, **_history_columns(e)} for e in entries],
        )

    async def history(self, session: AsyncSession, saga_id: uuid.UUID) -> list[HistoryRow]:
        """The saga's history, oldest first."""
        rows = await session.execute(
            select(saga_events).where(saga_events.c.saga_id == saga_id).order_by(saga_events.c.id)
        )
        return [_history_row(r) for r in rows]

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
        return [record_from_row(r) for r in await session.execute(query)]

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


def _history_columns(entry: HistoryEntry) -> dict[str, Any]:
    columns = {name: getattr(entry, name) for name in _HISTORY_FIELDS}
    # Free text is bounded: a participant's reason or an error can be anything.
    for name in ("reason", "note"):
        if columns[name] is not None:
            columns[name] = columns[name][:2000]
    return columns


def _history_row(row: Row[Any]) -> HistoryRow:
    values = {name: getattr(row, name) for name in _HISTORY_FIELDS}
    kind = values.pop("kind")
    purpose = values.pop("purpose")
    return HistoryRow(
        at=row.at,
        # A kind this version does not know (written by a newer one) reads as prose.
        kind=HistoryKind(kind) if kind in _KINDS else HistoryKind.TRANSITION,
        purpose=Purpose(purpose) if purpose in _PURPOSES else None,
        **values,
    )


def _definition_columns(record: SagaRecord) -> dict[str, Any]:
    return {
        "definition_version": record.definition_version,
        "definition_fingerprint": record.definition_fingerprint,
        "definition_shape": None
        if record.definition_shape is None
        else list(record.definition_shape),
    }


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


def record_from_row(row: Row[Any]) -> SagaRecord:
    """The record of a row of ``sagas.sagas`` (every column selected)."""
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
        definition_version=row.definition_version,
        definition_fingerprint=row.definition_fingerprint,
        definition_shape=None if row.definition_shape is None else tuple(row.definition_shape),
    )
