"""The trip saga's local steps: the orchestrator runs them in the saga's own
transaction, so the booking row and the saga's state change commit together."""

from __future__ import annotations

import uuid

import sagaway
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from trips.saga import CONFIRM, REJECT
from trips.tables import bookings


async def confirm(session: AsyncSession, saga: sagaway.SagaContext) -> sagaway.LocalResult:
    """The booking becomes CONFIRMED, with the references the participants returned."""
    await session.execute(
        update(bookings)
        .where(bookings.c.id == uuid.UUID(str(saga.data["booking_id"])))
        .values(
            status="CONFIRMED",
            flight_ref=saga.data.get("flight_ref"),
            hotel_ref=saga.data.get("hotel_ref"),
            charge_ref=saga.data.get("charge_ref"),
            updated_at=func.now(),
        )
    )
    return sagaway.LocalResult(sagaway.Outcome.SUCCEEDED)


async def reject(session: AsyncSession, saga: sagaway.SagaContext) -> sagaway.LocalResult:
    """The booking becomes REJECTED with the reason the saga compensated for."""
    await session.execute(
        update(bookings)
        .where(bookings.c.id == uuid.UUID(str(saga.data["booking_id"])))
        .values(
            status="REJECTED",
            rejection_reason=saga.rejection_reason or "rejected",
            updated_at=func.now(),
        )
    )
    return sagaway.LocalResult(sagaway.Outcome.SUCCEEDED)


LOCAL_STEPS = {CONFIRM: confirm, REJECT: reject}
"""Local step name → handler, for ``SagaApp(local_steps=...)``."""
