"""Simulated provider outages: operators rehearse them, tests drive retries with them."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.services.ops.tables import faults


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


FAULTS_CHANNEL = "sagaway_faults"
"""Notified by a trigger on ``ops.faults`` whenever a switch changes (migration 0008)."""


class FaultFlags:
    """The fault switches, held in memory and reloaded when PostgreSQL says they changed.

    Every command used to read its participant's switch: a round trip per message for a
    row that changes a few times a year. Here the switches are read once, and again only
    after a notification on :data:`FAULTS_CHANNEL`; while that notification channel is
    down (``listening`` is false) every call reads the table, as before, so a switch
    is never missed.
    """

    def __init__(self, changes: Notifications) -> None:
        self._changes = changes
        self._modes: dict[str, FaultMode] | None = None

    async def mode(self, session: AsyncSession, participant: str) -> FaultMode:
        """The participant's current mode, from memory when it can be trusted."""
        if not self._changes.listening:
            self._modes = None
            return await get_mode(session, participant)
        changed = self._changes.take()
        if self._modes is None or changed is None or changed:
            # Read after taking the notifications: a switch committed after this read
            # notifies again, so the next call reloads. Forgotten first, so a read
            # that fails is tried again rather than the old switches trusted.
            self._modes = None
            rows = await session.execute(select(faults.c.participant, faults.c.mode))
            self._modes = {r.participant: FaultMode(r.mode) for r in rows}
        return self._modes.get(participant, FaultMode.OK)

    async def in_outage(self, session: AsyncSession, participant: str) -> bool:
        """True while ``participant`` must act as if its provider were down."""
        return await self.mode(session, participant) is FaultMode.UNAVAILABLE


class Notifications(Protocol):
    """What :class:`FaultFlags` needs of a LISTEN connection (``outbox.wakeup.Wakeup``)."""

    listening: bool

    def take(self) -> set[str] | None:
        """Payloads since the last call; None when anything may have changed unseen."""
        ...
