"""Every path of the trip saga, with the test kit's harness: no database, no broker.

The test plays the participants (``h.reply``), the clock (``h.advance``) and the
operator (``h.retry``, ``h.abort``); the commands are built by the saga's own payload
builders, so each assertion on ``h.sent`` is what a participant would receive.
"""

from __future__ import annotations

import uuid
from typing import Any

from sagaway import Failed, Rejected, RetryPolicy, Succeeded
from sagaway.testing import SagaHarness

from trips.app import app
from trips.saga import CONFIRM, REJECT

TRIP: dict[str, Any] = {
    "booking_id": str(uuid.UUID(int=1)),
    "traveler": "Ada",
    "destination": "Lisbon",
    "depart_on": "2027-03-01",
    "nights": 3,
    "seats": 1,
    "card": "4242",
    "amount_cents": 45_000,
    "currency": "EUR",
}
# Fixed here, so that no test depends on the SAGAWAY_STEP_* of the machine it runs on.
RETRY = RetryPolicy(max_attempts=3, initial_interval_s=1.0, max_interval_s=4.0, timeout_s=10.0)

FLIGHT = Succeeded(output={"flight_ref": "FL-1"})
HOTEL = Succeeded(output={"hotel_ref": "HT-1"})
CHARGE = Succeeded(output={"charge_ref": "CH-1"})


def harness(**changes: Any) -> SagaHarness:
    return SagaHarness(app, "trip_booking", data={**TRIP, **changes}, retry=RETRY)


def commands(h: SagaHarness) -> list[str]:
    return [c.command for c in h.sent]


def test_a_trip_reserves_charges_and_confirms() -> None:
    h = harness()

    first = h.start()
    assert first is not None
    assert (first.participant, first.command) == ("flights", "ReserveFlight")
    assert first.payload["destination"] == "Lisbon"
    h.reply(FLIGHT)
    h.reply(HOTEL)
    charge = h.pending
    assert charge is not None
    # The outputs of the reservations are merged into the data the charge is built from.
    assert charge.command == "ChargeCard"
    assert (charge.payload["flight_ref"], charge.payload["hotel_ref"]) == ("FL-1", "HT-1")
    assert h.reply(CHARGE) is None

    assert h.status == "COMPLETED"
    assert set(h.steps.values()) == {"SUCCEEDED"}
    assert {k: h.data[k] for k in ("flight_ref", "hotel_ref", "charge_ref")} == {
        "flight_ref": "FL-1",
        "hotel_ref": "HT-1",
        "charge_ref": "CH-1",
    }
    assert [c.handler for c in h.local_calls] == [CONFIRM]
    assert commands(h) == ["ReserveFlight", "ReserveHotel", "ChargeCard"]


def test_no_room_cancels_the_flight_and_rejects_the_trip() -> None:
    h = harness(destination="FULL")
    h.start()
    h.reply(FLIGHT)

    cancel = h.reply(Rejected("no_rooms"))

    assert cancel is not None
    assert (cancel.command, cancel.purpose) == ("CancelFlight", "compensation")
    assert cancel.payload["flight_ref"] == "FL-1"
    h.reply(Succeeded())
    assert h.status == "COMPENSATED"
    assert h.failure_reason == "no_rooms"
    assert h.steps["reserve_flight"] == "COMPENSATED"
    assert [c.handler for c in h.local_calls] == [REJECT]


def test_a_declined_card_cancels_hotel_then_flight() -> None:
    h = harness(card="DECLINED")
    h.start()
    h.reply(FLIGHT)
    h.reply(HOTEL)

    h.reply(Rejected("card_declined"))
    h.reply(Succeeded())
    h.reply(Succeeded())

    assert commands(h)[-2:] == ["CancelHotel", "CancelFlight"]
    assert h.sent[-2].payload["hotel_ref"] == "HT-1"
    assert h.status == "COMPENSATED"
    assert h.failure_reason == "card_declined"
    assert [c.handler for c in h.local_calls] == [REJECT]


def test_no_seats_ends_the_trip_with_nothing_to_undo() -> None:
    h = harness(seats=12)
    h.start()

    assert h.reply(Rejected("no_seats")) is None

    assert h.status == "COMPENSATED"
    assert commands(h) == ["ReserveFlight"]
    assert [c.handler for c in h.local_calls] == [REJECT]


def test_a_flight_that_never_answers_is_asked_again_after_its_timeout() -> None:
    h = harness()
    h.start()

    # 10 s of timeout, then 1 s of backoff: the second attempt leaves at 11 s.
    assert h.advance(10.5) is None
    again = h.advance(0.5)

    assert again is not None
    assert (again.command, again.attempt) == ("ReserveFlight", 2)
    h.reply(FLIGHT)
    assert h.pending is not None and h.pending.command == "ReserveHotel"


def test_a_hotel_down_fails_the_saga_and_an_operator_aborts_it() -> None:
    h = harness()
    h.start()
    h.reply(FLIGHT)
    for _ in range(RETRY.max_attempts or 0):
        h.reply(Failed("hotel API down"))
        h.advance(RETRY.max_interval_s or 0)
    assert h.status == "FAILED"

    cancel = h.abort()

    # Whether the hotel applied a failed attempt is unknown, so its step is cancelled
    # too (CancelHotel is a no-op that leaves a tombstone when nothing was reserved).
    assert cancel is not None and cancel.command == "CancelHotel"
    h.reply(Succeeded())
    h.reply(Succeeded())
    assert commands(h)[-2:] == ["CancelHotel", "CancelFlight"]
    assert h.status == "COMPENSATED"


def test_a_charge_that_keeps_failing_is_retried_by_an_operator_not_undone() -> None:
    h = harness()
    h.start()
    h.reply(FLIGHT)
    h.reply(HOTEL)
    for _ in range(RETRY.max_attempts or 0):
        h.reply(Failed("card network timeout"))
        h.advance(RETRY.max_interval_s or 0)
    assert h.status == "FAILED"

    again = h.retry()

    assert again is not None and again.command == "ChargeCard"
    h.reply(CHARGE)
    assert h.status == "COMPLETED"


def test_a_late_reply_to_an_earlier_attempt_is_ignored() -> None:
    h = harness()
    first = h.start()
    h.advance(11)
    assert h.pending is not None and h.pending.attempt == 2

    assert h.reply(FLIGHT, to=first) is None

    assert h.pending.attempt == 2
    assert h.steps["reserve_flight"] == "RUNNING"
