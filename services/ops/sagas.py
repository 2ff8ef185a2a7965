"""Operator actions on sagas, shared by the admin API and the ``sagaway sagas`` CLI.

Each action, its effect and its audit record commit in one transaction.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.coordinator import SagaCoordinator
from sagaway.orchestrator.repository import SagaRecord
from sagaway.orchestrator.state import SagaState, SagaStatus
from sagaway.services.ops.audit import record_action


class SagaAction(Protocol):
    """An operator action on one saga (retry or abort)."""

    async def __call__(
        self, session: AsyncSession, coordinator: SagaCoordinator, saga_id: uuid.UUID, *, actor: str
    ) -> SagaState: ...


class BadCursor(ValueError):
    """The pagination cursor does not have the form of one this API hands out."""


CURSOR_PATTERN = r"^[0-9]{1,17}-[0-9a-f]{32}$"
"""The form of a cursor: microseconds since 1970 (UTC), ``-``, a saga id in hex.

Clients treat it as opaque and pass ``next_cursor`` back; the form is public so that the
OpenAPI document can say exactly which strings are cursors. Every string of this form is
one: it names a point of the keyset ``(created_at, id)``, and its page is the sagas
older than that point, whether or not a saga is there (empty past the oldest).
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of sagas and the cursor of the next (None on the last page)."""

    items: list[SagaRecord]
    next_cursor: str | None


def encode_cursor(created_at: datetime, saga_id: uuid.UUID) -> str:
    """A cursor pointing just past the saga created at ``created_at`` with ``saga_id``."""
    # Integer arithmetic on timedeltas: exact to the microsecond PostgreSQL keeps.
    return f"{(created_at - _EPOCH) // _MICROSECOND}-{saga_id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of ``encode_cursor``, total on ``CURSOR_PATTERN``; raises BadCursor."""
    if not _CURSOR.fullmatch(cursor):
        raise BadCursor(cursor)
    micros, _, hex_id = cursor.partition("-")
    # 17 digits stay within year 5138: no overflow for any string of the pattern.
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=hex_id)


async def list_sagas(
    session: AsyncSession,
    coordinator: SagaCoordinator,
    *,
    status: SagaStatus | None,
    limit: int,
    cursor: str | None,
) -> Page:
    """A page of sagas, newest first."""
    before = decode_cursor(cursor) if cursor else None
    rows = await coordinator.repository.page(session, status=status, limit=limit + 1, before=before)
    items = rows[:limit]
    more = len(rows) > limit
    return Page(
        items=items,
        next_cursor=(encode_cursor(items[-1].created_at, items[-1].id) if more and items else None),
    )


async def retry_saga(
    session: AsyncSession, coordinator: SagaCoordinator, saga_id: uuid.UUID, *, actor: str
) -> SagaState:
    """Resume a FAILED saga with a fresh attempt budget (InvalidRequest otherwise)."""
    state = await coordinator.retry(session, saga_id, actor=actor)
    await record_action(
        session, actor=actor, action="saga.retry", target=str(saga_id), detail=state.status.value
    )
    return state


async def abort_saga(
    session: AsyncSession, coordinator: SagaCoordinator, saga_id: uuid.UUID, *, actor: str
) -> SagaState:
    """Compensate a FAILED saga before its pivot (InvalidRequest otherwise)."""
    state = await coordinator.abort(session, saga_id, actor=actor)
    await record_action(
        session, actor=actor, action="saga.abort", target=str(saga_id), detail=state.status.value
    )
    return state
