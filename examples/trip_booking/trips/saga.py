"""The trip saga: reserve a flight, reserve a hotel, charge the card (pivot), confirm.

Payload builders are pure functions of the saga's data. The data starts as what
``POST /trips`` put in it; each participant's ``Succeeded(output=...)`` is merged into
it, which is how ``charge_card`` and the compensations know ``flight_ref`` and
``hotel_ref``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sagaway

from trips import contracts as c

CONFIRM = "trips.confirm"
REJECT = "trips.reject"


def _reserve_flight(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.ReserveFlight(
        booking_id=data["booking_id"],
        traveler=data["traveler"],
        destination=data["destination"],
        depart_on=data["depart_on"],
        seats=data["seats"],
    ).model_dump(mode="json")


def _cancel_flight(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.CancelFlight(
        booking_id=data["booking_id"], flight_ref=data.get("flight_ref")
    ).model_dump(mode="json")


def _reserve_hotel(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.ReserveHotel(
        booking_id=data["booking_id"],
        traveler=data["traveler"],
        destination=data["destination"],
        check_in=data["depart_on"],
        nights=data["nights"],
    ).model_dump(mode="json")


def _cancel_hotel(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.CancelHotel(booking_id=data["booking_id"], hotel_ref=data.get("hotel_ref")).model_dump(
        mode="json"
    )


def _charge_card(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.ChargeCard(
        booking_id=data["booking_id"],
        card=data["card"],
        amount_cents=data["amount_cents"],
        currency=data["currency"],
        flight_ref=data["flight_ref"],
        hotel_ref=data["hotel_ref"],
    ).model_dump(mode="json")


TRIP_BOOKING = sagaway.SagaDefinition(
    name="trip_booking",
    steps=(
        sagaway.Step(
            name="reserve_flight",
            action=sagaway.Action(
                participant="flights", command="ReserveFlight", payload=_reserve_flight
            ),
            compensation=sagaway.Action(
                participant="flights", command="CancelFlight", payload=_cancel_flight
            ),
        ),
        sagaway.Step(
            name="reserve_hotel",
            action=sagaway.Action(
                participant="hotels", command="ReserveHotel", payload=_reserve_hotel
            ),
            compensation=sagaway.Action(
                participant="hotels", command="CancelHotel", payload=_cancel_hotel
            ),
        ),
        # A charge is not undone by this saga: once it succeeded the trip goes ahead.
        sagaway.Step(
            name="charge_card",
            action=sagaway.Action(
                participant="payments", command="ChargeCard", payload=_charge_card
            ),
            pivot=True,
            # Card networks are slow to answer; give each attempt longer than the default.
            retry=sagaway.RetryPolicy(timeout_s=30.0),
        ),
        sagaway.Step(name="confirm_trip", action=sagaway.Local(handler=CONFIRM)),
    ),
    on_compensated=(sagaway.Local(handler=REJECT),),
)
"""The trip saga, as ``SagaApp(sagas=[TRIP_BOOKING])`` runs it."""
