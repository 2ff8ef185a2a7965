"""The trip application on the real stack (``saga_stack``): its migrations, its
participants against their tables, its local steps against the booking row, the
messages on RabbitMQ. Needs PostgreSQL and RabbitMQ (``SAGAWAY_DATABASE_URL``,
``SAGAWAY_AMQP_URL``)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sagaway
from sagaway.testing import SagaStack
from sqlalchemy import insert, select

from services.flights import reservations as flight_reservations
from services.hotels import reservations as hotel_reservations
from services.payments import charges
from trips.tables import bookings

TRIP: dict[str, Any] = {
    "traveler": "Ada",
    "destination": "Lisbon",
    "depart_on": "2027-03-01",
    "nights": 3,
    "seats": 1,
    "card": "4242",
    "amount_cents": 45_000,
    "currency": "EUR",
}


async def book(stack: SagaStack, **changes: Any) -> tuple[uuid.UUID, uuid.UUID]:
    """What ``POST /trips`` does: the booking and its saga in one transaction."""
    trip = {**TRIP, **changes}
    booking_id, saga_id = uuid.uuid4(), uuid.uuid4()
    async with stack.sessions() as session, session.begin():
        await session.execute(
            insert(bookings).values(
                id=booking_id,
                saga_id=saga_id,
                traveler=trip["traveler"],
                destination=trip["destination"],
                depart_on=dt.date.fromisoformat(trip["depart_on"]),
                nights=trip["nights"],
                seats=trip["seats"],
                amount_cents=trip["amount_cents"],
                currency=trip["currency"],
                status="PENDING",
            )
        )
        await sagaway.start_saga(
            session,
            "trip_booking",
            {"booking_id": str(booking_id), **trip},
            app=stack.app,
            saga_id=saga_id,
            settings=stack.settings,
        )
    return booking_id, saga_id


async def row(stack: SagaStack, query: Any) -> Any:
    async with stack.sessions() as session:
        return (await session.execute(query)).one()


async def test_a_trip_completes_with_every_reference(saga_stack: SagaStack) -> None:
    booking_id, saga_id = await book(saga_stack)

    saga = await saga_stack.wait(saga_id)

    assert saga["status"] == "COMPLETED", saga
    assert saga["data"]["flight_ref"].startswith("FL-")
    assert saga["data"]["hotel_ref"].startswith("HT-")
    booking = await row(saga_stack, select(bookings).where(bookings.c.id == booking_id))
    assert booking.status == "CONFIRMED"
    assert (booking.flight_ref, booking.hotel_ref, booking.charge_ref) == (
        saga["data"]["flight_ref"],
        saga["data"]["hotel_ref"],
        saga["data"]["charge_ref"],
    )
    charge = await row(saga_stack, select(charges).where(charges.c.saga_id == saga_id))
    assert (charge.status, charge.amount_cents) == ("CHARGED", 45_000)


async def test_a_declined_card_releases_flight_and_hotel(saga_stack: SagaStack) -> None:
    booking_id, saga_id = await book(saga_stack, card="DECLINED")

    saga = await saga_stack.wait(saga_id)

    assert saga["status"] == "COMPENSATED", saga
    assert saga["failure_reason"] == "card_declined"
    booking = await row(saga_stack, select(bookings).where(bookings.c.id == booking_id))
    assert (booking.status, booking.rejection_reason) == ("REJECTED", "card_declined")
    flight = await row(
        saga_stack,
        select(flight_reservations).where(flight_reservations.c.saga_id == saga_id),
    )
    hotel = await row(
        saga_stack, select(hotel_reservations).where(hotel_reservations.c.saga_id == saga_id)
    )
    assert (flight.status, hotel.status) == ("CANCELLED", "CANCELLED")


async def test_a_full_hotel_is_rejected_by_the_participant(saga_stack: SagaStack) -> None:
    # saga_stack.start: the saga alone, without a booking row (the participants do not
    # need one).
    saga_id = await saga_stack.start(
        "trip_booking", {"booking_id": str(uuid.uuid4()), **TRIP, "destination": "FULL"}
    )

    saga = await saga_stack.wait(saga_id)

    assert (saga["status"], saga["failure_reason"]) == ("COMPENSATED", "no_rooms")
    hotel = await row(
        saga_stack, select(hotel_reservations).where(hotel_reservations.c.saga_id == saga_id)
    )
    assert (hotel.status, hotel.hotel_ref) == ("REJECTED", None)
