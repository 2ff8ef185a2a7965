"""Simulated provider outages: operators rehearse them, tests drive retries with them."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.ops.tables import faults

FAULTABLE = ("inventory", "payment", "notification")


class FaultMode(StrEnum):
    """How a participant answers commands."""

    OK = "ok"
    UNAVAILABLE = "unavailable"


async def set_mode(session: AsyncSession, participant: str, mode: FaultMode) -> None:
    """Switch ``participant``'s mode (in the caller's transaction)."""
    if mode is FaultMode.OK:
        await session.execute(delete(faults).where(faults.c.participant == participant))
        return
    await session.execute(
        insert(faults)
        .values(participant=participant, mode=mode.value)
        .on_conflict_do_update(index_elements=[faults.c.participant], set_={"mode": mode.value})
    )


async def get_mode(session: AsyncSession, participant: str) -> FaultMode:
    """The participant's current mode; ``ok`` unless an outage is switched on."""
    value = (
        await session.execute(select(faults.c.mode).where(faults.c.participant == participant))
    ).scalar_one_or_none()
    return FaultMode(value) if value else FaultMode.OK
