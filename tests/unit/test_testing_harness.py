"""The test kit's harness, driving the built-in order saga through every path."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from sagaway import (
    Action,
    Failed,
    Participant,
    Rejected,
    RetryPolicy,
    SagaApp,
    SagaDefinition,
    Step,
    Succeeded,
)
from sagaway.orchestrator.state_machine import InvalidRequest
from sagaway.services import contracts as c
from sagaway.services.order_app import order_app
from sagaway.testing import HarnessError, SagaHarness, SentCommand

RETRY = RetryPolicy(max_attempts=3, initial_interval_s=1.0, max_interval_s=30.0, timeout_s=30.0)
SAGA = "order_fulfillment"


def order_data(**changes: Any) -> dict[str, Any]:
    return {
        "order_id": str(uuid.uuid4()),
        "customer_id": "alice",
        "items": [{"sku": "SKU-1", "quantity": 2}],
        "total_cents": 1500,
        "currency": "EUR",
        **changes,
    }


def harness(**kwargs: Any) -> SagaHarness:
    return SagaHarness(order_app, SAGA, data=order_data(), retry=RETRY, **kwargs)


def sent(h: SagaHarness) -> list[tuple[str, str]]:
    return [(s.command, s.purpose) for s in h.sent]


def test_success_sends_each_command_built_from_the_saga_data() -> None:
    h = harness()
    first = h.start()
    assert first is not None and first == h.pending
    assert (first.participant, first.command, first.attempt) == (
        "inventory",
        "ReserveInventory",
        1,
    )
    assert first.payload == {"order_id": h.data["order_id"], "items": h.data["items"]}
    second = h.reply(Succeeded(reply_type=c.INVENTORY_RESERVED, output={"reservation": "R1"}))
    assert second is not None and second.command == "AuthorizePayment"
    assert second.payload["amount_cents"] == 1500
    assert h.data["reservation"] == "R1"
    third = h.reply(Succeeded())
    # approve_order is local: it ran in between, and the notification follows.
    assert third is not None and third.command == "NotifyCustomer"
    assert third.payload["template"] == "order_approved"
    assert h.reply(Succeeded()) is None
    assert h.status == "COMPLETED"
    assert set(h.steps.values()) == {"SUCCEEDED"}
    assert [call.handler for call in h.local_calls] == ["orders.approve"]
    assert h.pending is None and h.failure_reason is None


def test_out_of_stock_compensates_nothing_unrun_and_runs_the_epilogue() -> None:
    h = harness()
    h.start()
    notify = h.reply(Rejected(c.OUT_OF_STOCK))
    # Nothing was reserved, so nothing is released: straight to the epilogue.
    assert notify is not None and notify.purpose == "epilogue"
    assert notify.payload["reason"] == c.OUT_OF_STOCK
    assert h.reply(Succeeded()) is None
    assert h.status == "COMPENSATED"
    assert h.failure_reason == c.OUT_OF_STOCK
    assert sent(h) == [("ReserveInventory", "action"), ("NotifyCustomer", "epilogue")]
    assert h.steps["reserve_inventory"] == "FAILED"
    assert h.steps["authorize_payment"] == "PENDING"


def test_insufficient_funds_releases_the_stock_then_rejects_and_notifies() -> None:
    h = harness()
    h.start()
    h.reply(Succeeded())
    release = h.reply(Rejected(c.INSUFFICIENT_FUNDS, reply_type=c.PAYMENT_REJECTED))
    assert release is not None
    assert (release.command, release.purpose, release.step) == (
        "ReleaseInventory",
        "compensation",
        "reserve_inventory",
    )
    notify = h.reply(Succeeded(reply_type=c.INVENTORY_RELEASED))
    assert notify is not None and notify.payload["template"] == "order_rejected"
    assert [(x.handler, x.purpose) for x in h.local_calls] == [("orders.reject", "epilogue")]
    assert h.reply(Succeeded()) is None
    assert h.status == "COMPENSATED"
    assert h.steps == {
        "reserve_inventory": "COMPENSATED",
        "authorize_payment": "FAILED",
        "approve_order": "PENDING",
        "notify_customer": "PENDING",
    }
    assert "VoidPayment" not in [s.command for s in h.sent]


def test_a_timeout_resends_the_same_step_as_attempt_two() -> None:
    h = harness()
    first = h.start()
    h.advance(29)
    assert h.pending == first
    # The deadline passes at 30 s, the backoff of 1 s ends at 31 s.
    retried = h.advance(2)
    assert retried is not None and retried == h.pending
    assert (retried.command, retried.attempt) == ("ReserveInventory", 2)
    assert first is not None
    assert retried.payload == first.payload
    assert retried.message_id != first.message_id
    # The first attempt's late reply is stale: ignored.
    assert h.reply(Succeeded(), to=first) is None
    assert h.pending == retried and h.status == "RUNNING"
    assert h.reply(Succeeded()) is not None
    assert h.steps["reserve_inventory"] == "SUCCEEDED"


def test_failures_until_attempts_run_out_fail_the_saga_and_a_retry_completes_it() -> None:
    h = harness()
    h.start()
    for attempt, backoff in ((1, 1.0), (2, 2.0)):
        assert h.reply(Failed("inventory down")) is None
        assert h.advance(backoff - 0.5) is None
        resent = h.advance(0.5)
        assert resent is not None and resent.attempt == attempt + 1
    h.reply(Failed("inventory down"))
    assert h.status == "FAILED"
    assert h.failure_reason is not None and "after 3 attempts" in h.failure_reason
    assert h.advance(3600) is None
    again = h.retry()
    assert h.status == "RUNNING"
    assert again is not None and (again.command, again.attempt) == ("ReserveInventory", 1)
    h.reply(Succeeded())
    h.reply(Succeeded())
    h.reply(Succeeded())
    assert h.status == "COMPLETED"


def test_abort_before_the_pivot_compensates() -> None:
    h = harness()
    h.start()
    h.reply(Succeeded())
    for backoff in (1, 2):
        h.reply(Failed("payment provider down"))
        assert h.advance(backoff) is not None
    h.reply(Failed("payment provider down"))
    assert h.status == "FAILED"
    void = h.abort()
    # The failed step is undone too (a timed-out attempt may have taken effect).
    assert void is not None and (void.command, void.purpose) == ("VoidPayment", "compensation")
    release = h.reply(Succeeded())
    assert release is not None and release.command == "ReleaseInventory"
    notify = h.reply(Succeeded())
    assert notify is not None and notify.payload["reason"] == "aborted"
    h.reply(Succeeded())
    assert h.status == "COMPENSATED"
    assert h.failure_reason == "aborted"


def test_abort_past_the_pivot_is_refused() -> None:
    h = harness()
    h.start()
    h.reply(Succeeded())
    h.reply(Succeeded())
    h.reply(Failed("mail down"))
    h.advance(10_000)
    assert h.status == "FAILED"
    with pytest.raises(InvalidRequest):
        h.abort()


def test_a_scripted_local_step_rejection_compensates() -> None:
    h = harness(local_steps={"orders.approve": Rejected("fraud_check")})
    h.start()
    h.reply(Succeeded())
    void = h.reply(Succeeded())
    assert void is not None and void.command == "VoidPayment"
    assert h.failure_reason == "fraud_check"


def test_replies_the_engine_would_refuse_are_refused() -> None:
    h = harness()
    with pytest.raises(HarnessError):
        h.reply(Succeeded())  # not started
    h.start()
    with pytest.raises(HarnessError):
        h.reply(Succeeded(reply_type="PaymentAuthorized"))  # not ReserveInventory's
    with pytest.raises(HarnessError):
        h.reply(Rejected("x" * 501))
    with pytest.raises(HarnessError):
        h.reply(Succeeded(output={"when": object()}))
    assert h.pending is not None and h.pending.attempt == 1


def test_a_payload_that_does_not_fit_the_command_model_is_refused() -> None:
    h = SagaHarness(trips_app(), "trip_booking", data={"trip": 7})
    with pytest.raises(HarnessError, match="does not fit Book"):
        h.start()


class Book(BaseModel):
    trip: str


class Pay(BaseModel):
    trip: str
    flight_ref: str


def trips_app() -> SagaApp:
    flights = Participant("flights")
    bank = Participant("bank")

    async def never(*_: Any) -> Any:
        raise AssertionError("the harness does not run handlers")

    flights.add(Book, never)
    bank.add(Pay, never)
    saga = SagaDefinition(
        name="trip_booking",
        steps=(
            Step(
                name="book",
                action=Action(
                    participant="flights", command="Book", payload=lambda d: {"trip": d["trip"]}
                ),
            ),
            Step(
                name="pay",
                action=Action(
                    participant="bank",
                    command="Pay",
                    payload=lambda d: {"trip": d["trip"], "flight_ref": d["flight_ref"]},
                ),
            ),
        ),
    )
    return SagaApp("trips", sagas=[saga], participants=[flights, bank])


def test_a_steps_output_flows_into_later_commands() -> None:
    h = SagaHarness(trips_app(), "trip_booking", data={"trip": "t1"})
    h.start()
    pay = h.reply(Succeeded(output={"flight_ref": "F1"}))
    assert pay == SentCommand(
        participant="bank",
        command="Pay",
        payload={"trip": "t1", "flight_ref": "F1"},
        attempt=1,
        purpose="action",
        step="pay",
        message_id=pay.message_id if pay else uuid.uuid4(),
    )
    assert h.data == {"trip": "t1", "flight_ref": "F1"}


def test_a_thousand_sagas_end_as_their_replies_say() -> None:
    outcomes: dict[str, int] = {}
    for i in range(1000):
        h = harness()
        h.start()
        if i % 3 == 0:
            h.reply(Rejected(c.OUT_OF_STOCK))
        elif i % 3 == 1:
            h.reply(Succeeded())
            h.reply(Rejected(c.INSUFFICIENT_FUNDS))
            h.reply(Succeeded())
        else:
            h.advance(31)
            h.reply(Succeeded())
            h.reply(Succeeded())
        assert h.reply(Succeeded()) is None
        outcomes[h.status] = outcomes.get(h.status, 0) + 1
    assert outcomes == {"COMPENSATED": 667, "COMPLETED": 333}
