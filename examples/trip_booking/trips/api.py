"""``POST /trips`` and ``GET /trips/{booking_id}``, served by ``sagaway api`` next to
sagaway's own routes (``SagaApp(routers=[router])``)."""

from __future__ import annotations

import datetime as dt
import uuid

import sagaway
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select

from trips.tables import bookings

router = APIRouter(tags=["trips"])


class TripRequest(BaseModel):
    """A trip to book. ``destination: "FULL"`` has no hotel room, ``card: "DECLINED"``
    is declined and more than 9 ``seats`` find no flight: the saga compensates."""

    model_config = ConfigDict(extra="forbid")

    traveler: str = Field(min_length=1, max_length=200)
    destination: str = Field(min_length=1, max_length=100)
    depart_on: dt.date
    nights: int = Field(ge=1, le=60)
    seats: int = Field(default=1, ge=1, le=50)
    card: str = Field(min_length=1, max_length=64)
    amount_cents: int = Field(gt=0)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")


class TripAccepted(BaseModel):
    """The booking and the saga that books it (follow it at ``/sagas/{saga_id}``)."""

    booking_id: uuid.UUID
    saga_id: uuid.UUID


class TripView(BaseModel):
    """A booking and where it stands."""

    booking_id: uuid.UUID
    saga_id: uuid.UUID
    traveler: str
    destination: str
    status: str
    flight_ref: str | None
    hotel_ref: str | None
    charge_ref: str | None
    rejection_reason: str | None


@router.post("/trips", status_code=202, response_model=TripAccepted)
async def book_trip(
    body: TripRequest, session: sagaway.SessionDep, app: sagaway.ApplicationDep
) -> TripAccepted:
    """Book a trip: the booking row, its saga and the saga's first command commit in one
    transaction, or none of them does."""
    booking_id, saga_id = uuid.uuid4(), uuid.uuid4()
    async with session.begin():
        await session.execute(
            insert(bookings).values(
                id=booking_id,
                saga_id=saga_id,
                traveler=body.traveler,
                destination=body.destination,
                depart_on=body.depart_on,
                nights=body.nights,
                seats=body.seats,
                amount_cents=body.amount_cents,
                currency=body.currency,
                status="PENDING",
            )
        )
        await sagaway.start_saga(
            session,
            "trip_booking",
            {"booking_id": str(booking_id), **body.model_dump(mode="json")},
            app=app,
            saga_id=saga_id,
        )
    return TripAccepted(booking_id=booking_id, saga_id=saga_id)


@router.get("/trips/{booking_id}", response_model=TripView)
async def get_trip(booking_id: uuid.UUID, session: sagaway.SessionDep) -> TripView:
    """The booking and where it stands."""
    row = (await session.execute(select(bookings).where(bookings.c.id == booking_id))).first()
    if row is None:
        raise HTTPException(status_code=404, detail="trip not found")
    return TripView(
        booking_id=row.id,
        saga_id=row.saga_id,
        traveler=row.traveler,
        destination=row.destination,
        status=row.status,
        flight_ref=row.flight_ref,
        hotel_ref=row.hotel_ref,
        charge_ref=row.charge_ref,
        rejection_reason=row.rejection_reason,
    )
