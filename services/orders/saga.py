"""The order saga: reserve stock, authorize payment, approve (pivot), notify."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagaway.orchestrator.dsl import Action, Local, RetryPolicy, SagaDefinition, Step
from sagaway.services import contracts as c


def _reserve(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.ReserveInventory(
        order_id=data["order_id"],
        items=[c.Line(sku=i["sku"], quantity=i["quantity"]) for i in data["items"]],
    ).model_dump(mode="json")


def _release(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.ReleaseInventory(order_id=data["order_id"]).model_dump(mode="json")


def _authorize(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.AuthorizePayment(
        order_id=data["order_id"],
        customer_id=data["customer_id"],
        amount_cents=data["total_cents"],
        currency=data["currency"],
    ).model_dump(mode="json")


def _void(data: Mapping[str, Any]) -> dict[str, Any]:
    return c.VoidPayment(order_id=data["order_id"]).model_dump(mode="json")


def _notify(template: str) -> Any:
    def build(data: Mapping[str, Any]) -> dict[str, Any]:
        return c.NotifyCustomer(
            order_id=data["order_id"],
            customer_id=data["customer_id"],
            template=template,
            reason=data.get("rejection_reason"),
        ).model_dump(mode="json")

    return build


ORDER_FULFILLMENT = SagaDefinition(
    name="order_fulfillment",
    steps=(
        Step(
            name="reserve_inventory",
            action=Action(participant="inventory", command="ReserveInventory", payload=_reserve),
            compensation=Action(
                participant="inventory", command="ReleaseInventory", payload=_release
            ),
        ),
        Step(
            name="authorize_payment",
            action=Action(participant="payment", command="AuthorizePayment", payload=_authorize),
            compensation=Action(participant="payment", command="VoidPayment", payload=_void),
        ),
        Step(name="approve_order", action=Local(handler="orders.approve"), pivot=True),
        Step(
            name="notify_customer",
            action=Action(
                participant="notification",
                command="NotifyCustomer",
                payload=_notify("order_approved"),
            ),
            retry=RetryPolicy(),
        ),
    ),
    on_compensated=(
        Local(handler="orders.reject"),
        Action(
            participant="notification", command="NotifyCustomer", payload=_notify("order_rejected")
        ),
    ),
)
