"""Operator actions on sagas, shared by the admin API and the ``sagaway sagas`` CLI.

Each action, its effect and its audit record commit in one transaction.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.engine import SagaEngine
from orchestrator.repository import SagaRecord
from orchestrator.state import SagaState, SagaStatus
from services.ops.audit import record_action


class SagaAction(Protocol):
    """An operator action on one saga (retry or abort)."""

    async def __call__(
        self, session: AsyncSession, engine: SagaEngine, saga_id: uuid.UUID, *, actor: str
    ) -> SagaState: ...


class BadCursor(ValueError):
    """The pagination cursor was not one this API handed out."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of sagas and the cursor of the next (None on the last page)."""

    items: list[SagaRecord]
    next_cursor: str | None


def encode_cursor(record: SagaRecord) -> str:
    """An opaque cursor pointing just past ``record``."""
    raw = f"{record.created_at.isoformat()}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of ``encode_cursor``; raises BadCursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, saga_id = raw.split("|")
        return datetime.fromisoformat(created_at), uuid.UUID(saga_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor(cursor) from exc


async def list_sagas(
    session: AsyncSession,
    engine: SagaEngine,
    *,
    status: SagaStatus | None,
    limit: int,
    cursor: str | None,
) -> Page:
    """A page of sagas, newest first."""
    before = decode_cursor(cursor) if cursor else None
    rows = await engine.repository.page(session, status=status, limit=limit + 1, before=before)
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items=items, next_cursor=encode_cursor(items[-1]) if more and items else None)


async def retry_saga(
    session: AsyncSession, engine: SagaEngine, saga_id: uuid.UUID, *, actor: str
) -> SagaState:
    """Resume a FAILED saga with a fresh attempt budget (InvalidRequest otherwise)."""
    state = await engine.retry(session, saga_id, actor=actor)
    await record_action(
        session, actor=actor, action="saga.retry", target=str(saga_id), detail=state.status.value
    )
    return state


async def abort_saga(
    session: AsyncSession, engine: SagaEngine, saga_id: uuid.UUID, *, actor: str
) -> SagaState:
    """Compensate a FAILED saga before its pivot (InvalidRequest otherwise)."""
    state = await engine.abort(session, saga_id, actor=actor)
    await record_action(
        session, actor=actor, action="saga.abort", target=str(saga_id), detail=state.status.value
    )
    return state
