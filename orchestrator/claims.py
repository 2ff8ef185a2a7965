"""One row per saga in a participant's table: the idempotency pattern of a participant.

Keying a participant's effect by saga, not by message, makes every attempt of one
saga's step find the same row: a retry reuses the first attempt's effect, and a
compensation that ran first leaves a tombstone that bars a late attempt from acting
afterwards. Inventory's reservations and payment's authorizations both work this way,
and so can a team's participant.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession


async def claim_for_saga(
    session: AsyncSession,
    table: Table,
    saga_id: uuid.UUID,
    values: Mapping[str, Any],
    *,
    lock: bool = False,
) -> Mapping[str, Any] | None:
    """Insert the saga's row (``saga_id`` is the table's primary key); if the saga has
    one already, return it instead (locked ``FOR UPDATE`` when ``lock``).

    A concurrent attempt for the same saga waits on the primary key and then reads the
    winner's row, so the effect happens once per saga whatever arrives twice.
    """
    inserted = (
        await session.execute(
            insert(table)
            .values(saga_id=saga_id, **values)
            .on_conflict_do_nothing(index_elements=[table.c.saga_id])
            .returning(table.c.saga_id)
        )
    ).first()
    if inserted is not None:
        return None
    query = select(table).where(table.c.saga_id == saga_id)
    if lock:
        query = query.with_for_update()
    return dict((await session.execute(query)).mappings().one())


async def set_saga_status(
    session: AsyncSession, table: Table, saga_id: uuid.UUID, status: str
) -> None:
    """Move the saga's row to ``status`` (the table has ``status`` and ``updated_at``)."""
    await session.execute(
        update(table).where(table.c.saga_id == saga_id).values(status=status, updated_at=func.now())
    )
