"""Flights: hold seats for a trip (more than 9 seats: ``no_seats``); release them."""

from __future__ import annotations

import sagaway
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Uuid, func
from sqlalchemy.ext.asyncio import AsyncSession

from trips.contracts import CancelFlight, ReserveFlight

MAX_SEATS = 9

# One row per saga (the primary key): every attempt of one saga's step finds it, so a
# redelivered or retried command reuses the first answer, and a cancel that ran first
# leaves a tombstone that stops a late reservation.
reservations = Table(
    "reservations",
    MetaData(schema="flights"),
    Column("saga_id", Uuid, primary_key=True),
    Column("booking_id", Uuid, nullable=False),
    Column("flight_ref", String(32)),
    Column("seats", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

flights = sagaway.Participant("flights", description="Holds seats on flights for a trip.")


@flights.handles(ReserveFlight)
async def reserve(
    session: AsyncSession, command: ReserveFlight, ctx: sagaway.CommandContext
) -> sagaway.Reply:
    """Hold the seats and answer the flight's reference."""
    ref = f"FL-{ctx.saga_id.hex[:8].upper()}"
    rejected = command.seats > MAX_SEATS
    existing = await sagaway.claim_for_saga(
        session,
        reservations,
        ctx.saga_id,
        {
            "booking_id": command.booking_id,
            "flight_ref": None if rejected else ref,
            "seats": command.seats,
            "status": "REJECTED" if rejected else "RESERVED",
        },
    )
    status = (
        existing["status"] if existing is not None else ("REJECTED" if rejected else "RESERVED")
    )
    if status == "RESERVED":
        return sagaway.Succeeded(output={"flight_ref": ref})
    if status == "REJECTED":
        return sagaway.Rejected("no_seats", detail={"seats": command.seats})
    # Cancelled already: this attempt arrived after the saga gave up on it.
    return sagaway.Failed("flight reservation already cancelled for this saga")


@flights.handles(CancelFlight)
async def cancel(
    session: AsyncSession, command: CancelFlight, ctx: sagaway.CommandContext
) -> sagaway.Reply:
    """Release the seats; with no reservation yet, leave a tombstone."""
    existing = await sagaway.claim_for_saga(
        session,
        reservations,
        ctx.saga_id,
        {"booking_id": command.booking_id, "seats": 0, "status": "CANCELLED"},
        lock=True,
    )
    if existing is not None and existing["status"] == "RESERVED":
        await sagaway.set_saga_status(session, reservations, ctx.saga_id, "CANCELLED")
    return sagaway.Succeeded()
