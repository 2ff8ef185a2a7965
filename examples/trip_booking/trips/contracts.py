"""The trip saga's commands: one pydantic model per message type.

A model's class name is its message type (``ReserveFlight``); AsyncAPI documents each
one from the model, and a participant's handler receives it validated.
"""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReserveFlight(_Command):
    """Hold seats on the outbound flight."""

    booking_id: uuid.UUID
    traveler: str
    destination: str
    depart_on: dt.date
    seats: int = Field(ge=1)


class CancelFlight(_Command):
    """Release the saga's flight reservation (compensates ReserveFlight)."""

    booking_id: uuid.UUID
    flight_ref: str | None = None


class ReserveHotel(_Command):
    """Hold a room at the destination."""

    booking_id: uuid.UUID
    traveler: str
    destination: str
    check_in: dt.date
    nights: int = Field(ge=1)


class CancelHotel(_Command):
    """Release the saga's hotel reservation (compensates ReserveHotel)."""

    booking_id: uuid.UUID
    hotel_ref: str | None = None


class ChargeCard(_Command):
    """Take the trip's price from the traveler's card (the pivot: never undone)."""

    booking_id: uuid.UUID
    card: str
    amount_cents: int = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    # Shown on the statement, so the charge names what it pays for.
    flight_ref: str
    hotel_ref: str
