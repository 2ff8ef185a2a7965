"""Outbox rows the relay gave up on: listed for operators, and sent again on request."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class DeadRow:
    """An outbox message parked as dead."""

    outbox: str
    message_id: uuid.UUID
    saga_id: uuid.UUID
    message_type: str
    exchange: str
    routing_key: str
    attempts: int
    last_error: str | None
    created_at: datetime
    dead_at: datetime


async def dead_rows(
    session: AsyncSession, outboxes: Mapping[str, Table], *, limit: int
) -> list[DeadRow]:
    """Dead rows of every outbox (name → table), oldest first, at most ``limit`` per
    outbox."""
    found: list[DeadRow] = []
    for name, table in outboxes.items():
        rows = await session.execute(
            select(table)
            .where(table.c.dead_at.is_not(None), table.c.published_at.is_(None))
            .order_by(table.c.id)
            .limit(limit)
        )
        found.extend(
            DeadRow(
                outbox=name,
                message_id=r.message_id,
                saga_id=r.saga_id,
                message_type=r.message_type,
                exchange=r.exchange,
                routing_key=r.routing_key,
                attempts=r.attempts,
                last_error=r.last_error,
                created_at=r.created_at,
                dead_at=r.dead_at,
            )
            for r in rows
        )
    return found


async def requeue_dead(
    session: AsyncSession, outboxes: Mapping[str, Table], message_id: uuid.UUID
) -> str | None:
    """Give a dead row a fresh attempt budget; returns its outbox, or None if no dead
    row has that id. The relay picks it up at its next pass, in its saga's order."""
    for name, table in outboxes.items():
        if await _requeue(session, table, message_id):
            return name
    return None


async def _requeue(session: AsyncSession, table: Table, message_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(table)
        .where(
            table.c.message_id == message_id,
            table.c.dead_at.is_not(None),
            table.c.published_at.is_(None),
        )
        .values(dead_at=None, next_attempt_at=None, attempts=0)
        .returning(table.c.id)
    )
    return result.first() is not None
