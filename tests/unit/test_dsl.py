"""The saga DSL: definitions are validated when built; the order saga is what the spec says."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from sagaway.orchestrator.dsl import (
    Action,
    DefinitionError,
    Local,
    ResolvedRetryPolicy,
    RetryPolicy,
    SagaDefinition,
    Step,
)
from sagaway.services import contracts as c
from sagaway.services.order_app import order_app
from sagaway.services.orders.saga import ORDER_FULFILLMENT

DEFINITIONS = order_app.definitions


def _payload(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data)


def _action(command: str = "DoThing", participant: str = "svc") -> Action:
    return Action(participant=participant, command=command, payload=_payload)


def _step(name: str, **options: Any) -> Step:
    return Step(name=name, action=_action(), **options)


# ---------------------------------------------------------------- definition validation


def test_a_valid_definition_builds_and_finds_its_steps_by_name() -> None:
    definition = SagaDefinition(
        name="demo",
        steps=(_step("first", compensation=_action("UndoThing")), _step("second", pivot=True)),
    )

    assert [s.name for s in definition.steps] == ["first", "second"]
    assert definition.pivot_index == 1
    assert definition.step("second").pivot is True
    with pytest.raises(KeyError):
        definition.step("third")


def test_a_definition_without_a_pivot_has_no_pivot_index() -> None:
    definition = SagaDefinition(name="demo", steps=(_step("only"),))

    assert definition.pivot_index is None


def test_duplicate_step_names_are_refused() -> None:
    with pytest.raises(DefinitionError, match=r"repeats step names \['twice'\]"):
        SagaDefinition(name="demo", steps=(_step("twice"), _step("once"), _step("twice")))


def test_empty_steps_are_refused() -> None:
    with pytest.raises(DefinitionError, match="has no steps"):
        SagaDefinition(name="demo", steps=())


@pytest.mark.parametrize("name", ["", "Demo", "1demo", "demo-saga", "demo saga", "x" * 64])
def test_bad_saga_names_are_refused(name: str) -> None:
    with pytest.raises(DefinitionError, match="saga name"):
        SagaDefinition(name=name, steps=(_step("only"),))


@pytest.mark.parametrize("name", ["", "Reserve", "reserve-inventory", "_private", "9lives"])
def test_bad_step_names_are_refused(name: str) -> None:
    with pytest.raises(DefinitionError, match="step name"):
        _step(name)


@pytest.mark.parametrize("participant", ["", "Inventory", "in-ventory", "1inventory"])
def test_bad_participant_names_are_refused(participant: str) -> None:
    with pytest.raises(DefinitionError, match="participant"):
        _action(participant=participant)


@pytest.mark.parametrize("command", ["", "reserveInventory", "Reserve_Inventory", "Reserve It"])
def test_commands_must_be_camel_case_message_types(command: str) -> None:
    with pytest.raises(DefinitionError, match="CamelCase"):
        _action(command=command)


@pytest.mark.parametrize("handler", ["", "Orders.approve", "orders-approve", ".approve"])
def test_bad_local_handler_names_are_refused(handler: str) -> None:
    with pytest.raises(DefinitionError, match="local handler"):
        Local(handler=handler)


def test_a_dotted_local_handler_name_is_accepted() -> None:
    assert Local(handler="orders.approve").handler == "orders.approve"


def test_more_than_one_pivot_is_refused() -> None:
    with pytest.raises(DefinitionError, match="more than one pivot"):
        SagaDefinition(
            name="demo",
            steps=(_step("first", pivot=True), _step("second"), _step("third", pivot=True)),
        )


def test_a_compensation_on_the_pivot_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"cannot be compensated: \['pivot'\]"):
        SagaDefinition(
            name="demo",
            steps=(_step("first"), _step("pivot", pivot=True, compensation=_action("Undo"))),
        )


def test_a_compensation_after_the_pivot_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"cannot be compensated: \['after'\]"):
        SagaDefinition(
            name="demo",
            steps=(
                _step("before", compensation=_action("Undo")),
                _step("pivot", pivot=True),
                _step("after", compensation=Local(handler="undo.after")),
            ),
        )


def test_a_compensation_before_the_pivot_is_allowed() -> None:
    definition = SagaDefinition(
        name="demo",
        steps=(_step("before", compensation=_action("Undo")), _step("pivot", pivot=True)),
    )

    assert definition.steps[0].compensation is not None


# ---------------------------------------------------------------- retry policies


@pytest.mark.parametrize("attempts", [0, -1])
def test_max_attempts_below_one_is_refused(attempts: int) -> None:
    with pytest.raises(DefinitionError, match="max_attempts"):
        RetryPolicy(max_attempts=attempts)


@pytest.mark.parametrize("field", ["initial_interval_s", "max_interval_s", "timeout_s"])
@pytest.mark.parametrize("value", [0, 0.0, -1.5])
def test_non_positive_intervals_are_refused(field: str, value: float) -> None:
    with pytest.raises(DefinitionError, match=f"{field} must be positive"):
        RetryPolicy(**{field: value})


def test_an_empty_retry_policy_is_valid() -> None:
    policy = RetryPolicy()

    assert (policy.max_attempts, policy.initial_interval_s) == (None, None)
    assert (policy.max_interval_s, policy.timeout_s) == (None, None)


def test_resolve_takes_every_unset_field_from_the_defaults() -> None:
    defaults = RetryPolicy(max_attempts=5, initial_interval_s=1, max_interval_s=30, timeout_s=20)

    resolved = RetryPolicy(max_attempts=2, timeout_s=3.5).resolve(defaults)

    assert resolved == ResolvedRetryPolicy(
        max_attempts=2, initial_interval_s=1, max_interval_s=30, timeout_s=3.5
    )


def test_resolve_of_an_empty_policy_is_the_defaults() -> None:
    defaults = RetryPolicy(max_attempts=4, initial_interval_s=0.5, max_interval_s=8, timeout_s=9)

    resolved = RetryPolicy().resolve(defaults)

    assert resolved == ResolvedRetryPolicy(
        max_attempts=4, initial_interval_s=0.5, max_interval_s=8, timeout_s=9
    )


def test_resolve_refuses_defaults_that_leave_a_field_unset() -> None:
    incomplete = RetryPolicy(max_attempts=5, initial_interval_s=1, max_interval_s=30)

    with pytest.raises(DefinitionError, match="must set every field"):
        RetryPolicy().resolve(incomplete)


def test_resolve_accepts_incomplete_defaults_when_the_policy_sets_the_gap() -> None:
    incomplete = RetryPolicy(max_attempts=5, initial_interval_s=1, max_interval_s=30)

    assert RetryPolicy(timeout_s=7).resolve(incomplete).timeout_s == 7


def test_backoff_doubles_from_the_initial_interval() -> None:
    policy = ResolvedRetryPolicy(
        max_attempts=10, initial_interval_s=1.5, max_interval_s=1000, timeout_s=1
    )

    assert [policy.backoff_s(n) for n in range(1, 6)] == [1.5, 3.0, 6.0, 12.0, 24.0]


def test_backoff_is_capped_at_the_max_interval() -> None:
    policy = ResolvedRetryPolicy(
        max_attempts=10, initial_interval_s=1, max_interval_s=30, timeout_s=1
    )

    assert [policy.backoff_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.backoff_s(200) == 30.0
    assert isinstance(policy.backoff_s(1), float)


# ---------------------------------------------------------------- the order saga


def test_order_fulfillment_is_registered_under_its_name() -> None:
    assert DEFINITIONS["order_fulfillment"] is ORDER_FULFILLMENT
    assert ORDER_FULFILLMENT.name == "order_fulfillment"


def test_order_fulfillment_has_the_four_steps_of_the_spec_in_order() -> None:
    assert [s.name for s in ORDER_FULFILLMENT.steps] == [
        "reserve_inventory",
        "authorize_payment",
        "approve_order",
        "notify_customer",
    ]


def test_approve_order_is_the_only_pivot() -> None:
    assert ORDER_FULFILLMENT.pivot_index == 2
    assert [s.name for s in ORDER_FULFILLMENT.steps if s.pivot] == ["approve_order"]


def _as_action(candidate: Action | Local | None) -> Action:
    assert isinstance(candidate, Action)
    return candidate


def test_order_fulfillment_sends_each_command_to_its_participant() -> None:
    reserve = ORDER_FULFILLMENT.step("reserve_inventory")
    authorize = ORDER_FULFILLMENT.step("authorize_payment")
    approve = ORDER_FULFILLMENT.step("approve_order")
    notify = ORDER_FULFILLMENT.step("notify_customer")

    assert (_as_action(reserve.action).participant, _as_action(reserve.action).command) == (
        "inventory",
        "ReserveInventory",
    )
    assert _as_action(reserve.compensation).command == "ReleaseInventory"
    assert _as_action(reserve.compensation).participant == "inventory"
    assert (_as_action(authorize.action).participant, _as_action(authorize.action).command) == (
        "payment",
        "AuthorizePayment",
    )
    assert _as_action(authorize.compensation).command == "VoidPayment"
    assert _as_action(authorize.compensation).participant == "payment"
    assert approve.action == Local(handler="orders.approve")
    assert approve.compensation is None
    assert (_as_action(notify.action).participant, _as_action(notify.action).command) == (
        "notification",
        "NotifyCustomer",
    )
    assert notify.compensation is None


def test_after_compensation_the_order_is_rejected_then_the_customer_told() -> None:
    first, second = ORDER_FULFILLMENT.on_compensated

    assert first == Local(handler="orders.reject")
    assert (_as_action(second).participant, _as_action(second).command) == (
        "notification",
        "NotifyCustomer",
    )


ORDER_ID = uuid.uuid4()

# The saga data as ``services/orders/placing.py`` stores it, plus what the engine adds.
SAGA_DATA: dict[str, Any] = {
    "order_id": str(ORDER_ID),
    "saga_id": str(uuid.uuid4()),
    "customer_id": "c-42",
    "items": [
        {"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1500},
        {"sku": "SKU-2", "quantity": 1, "unit_price_cents": 250},
    ],
    "total_cents": 3250,
    "currency": "EUR",
    "rejection_reason": None,
}


def test_reserve_payload_is_a_reserve_inventory_command() -> None:
    payload = _as_action(ORDER_FULFILLMENT.step("reserve_inventory").action).payload(SAGA_DATA)

    assert c.ReserveInventory.model_validate(payload) == c.ReserveInventory(
        order_id=ORDER_ID,
        items=[c.Line(sku="SKU-1", quantity=2), c.Line(sku="SKU-2", quantity=1)],
    )
    # JSON-ready: the id is a string, and prices are not the inventory's business.
    assert payload["order_id"] == str(ORDER_ID)
    assert payload["items"] == [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}]


def test_release_payload_is_a_release_inventory_command() -> None:
    payload = _as_action(ORDER_FULFILLMENT.step("reserve_inventory").compensation).payload(
        SAGA_DATA
    )

    assert payload == {"order_id": str(ORDER_ID)}
    assert c.ReleaseInventory.model_validate(payload).order_id == ORDER_ID


def test_authorize_payload_is_an_authorize_payment_command_for_the_total() -> None:
    payload = _as_action(ORDER_FULFILLMENT.step("authorize_payment").action).payload(SAGA_DATA)

    assert c.AuthorizePayment.model_validate(payload) == c.AuthorizePayment(
        order_id=ORDER_ID, customer_id="c-42", amount_cents=3250, currency="EUR"
    )
    assert payload["order_id"] == str(ORDER_ID)


def test_void_payload_is_a_void_payment_command() -> None:
    payload = _as_action(ORDER_FULFILLMENT.step("authorize_payment").compensation).payload(
        SAGA_DATA
    )

    assert payload == {"order_id": str(ORDER_ID)}
    assert c.VoidPayment.model_validate(payload).order_id == ORDER_ID


def test_notify_payload_announces_the_approval() -> None:
    payload = _as_action(ORDER_FULFILLMENT.step("notify_customer").action).payload(SAGA_DATA)

    assert c.NotifyCustomer.model_validate(payload) == c.NotifyCustomer(
        order_id=ORDER_ID, customer_id="c-42", template="order_approved", reason=None
    )


def test_notify_payload_without_a_rejection_reason_key_has_no_reason() -> None:
    data = {k: v for k, v in SAGA_DATA.items() if k != "rejection_reason"}

    payload = _as_action(ORDER_FULFILLMENT.step("notify_customer").action).payload(data)

    assert payload["reason"] is None


def test_rejection_notice_payload_carries_the_reason() -> None:
    data = {**SAGA_DATA, "rejection_reason": c.OUT_OF_STOCK}

    payload = _as_action(ORDER_FULFILLMENT.on_compensated[1]).payload(data)

    assert c.NotifyCustomer.model_validate(payload) == c.NotifyCustomer(
        order_id=ORDER_ID, customer_id="c-42", template="order_rejected", reason="out_of_stock"
    )


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("field", ["initial_interval_s", "max_interval_s", "timeout_s"])
def test_non_finite_intervals_are_refused(field: str, value: float) -> None:
    with pytest.raises(DefinitionError, match=f"{field} must be positive and finite"):
        RetryPolicy(**{field: value})
