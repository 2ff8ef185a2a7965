"""The trail of admin actions: what, when, by whom, on what."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.services.ops.tables import admin_actions


async def record_action(
    session: AsyncSession, *, actor: str, action: str, target: str, detail: str = ""
) -> None:
    """Record an admin action in the caller's transaction (so it exists iff the action did)."""
    await session.execute(
        insert(admin_actions).values(actor=actor, action=action, target=target, detail=detail)
    )
