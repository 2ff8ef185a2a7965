"""Hotels: hold a room for a trip (destination ``FULL``: ``no_rooms``); release it."""

from __future__ import annotations

import sagaway
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Uuid, func
from sqlalchemy.ext.asyncio import AsyncSession

from trips.contracts import CancelHotel, ReserveHotel

FULL = "FULL"

# One row per saga, like flights.reservations (see there why).
reservations = Table(
    "reservations",
    MetaData(schema="hotels"),
    Column("saga_id", Uuid, primary_key=True),
    Column("booking_id", Uuid, nullable=False),
    Column("hotel_ref", String(32)),
    Column("nights", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

hotels = sagaway.Participant("hotels", description="Holds hotel rooms for a trip.")


@hotels.handles(ReserveHotel)
async def reserve(
    session: AsyncSession, command: ReserveHotel, ctx: sagaway.CommandContext
) -> sagaway.Reply:
    """Hold a room and answer the hotel's reference."""
    ref = f"HT-{ctx.saga_id.hex[:8].upper()}"
    rejected = command.destination == FULL
    existing = await sagaway.claim_for_saga(
        session,
        reservations,
        ctx.saga_id,
        {
            "booking_id": command.booking_id,
            "hotel_ref": None if rejected else ref,
            "nights": command.nights,
            "status": "REJECTED" if rejected else "RESERVED",
        },
    )
    status = (
        existing["status"] if existing is not None else ("REJECTED" if rejected else "RESERVED")
    )
    if status == "RESERVED":
        return sagaway.Succeeded(output={"hotel_ref": ref})
    if status == "REJECTED":
        return sagaway.Rejected("no_rooms", detail={"destination": command.destination})
    return sagaway.Failed("hotel reservation already cancelled for this saga")


@hotels.handles(CancelHotel)
async def cancel(
    session: AsyncSession, command: CancelHotel, ctx: sagaway.CommandContext
) -> sagaway.Reply:
    """Release the room; with no reservation yet, leave a tombstone."""
    existing = await sagaway.claim_for_saga(
        session,
        reservations,
        ctx.saga_id,
        {"booking_id": command.booking_id, "nights": 0, "status": "CANCELLED"},
        lock=True,
    )
    if existing is not None and existing["status"] == "RESERVED":
        await sagaway.set_saga_status(session, reservations, ctx.saga_id, "CANCELLED")
    return sagaway.Succeeded()
