"""Message contracts of the order saga's participants: commands and their replies.

Commands are imperative (``ReserveInventory``); replies are past tense
(``InventoryReserved``) and carry the participant protocol's outcome.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sagaway.orchestrator.participants import COMMAND_FAILED, CommandFailed

__all__ = ["COMMAND_FAILED", "CommandFailed"]  # every participant's technical failure

SKU_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Line(_Contract):
    """One SKU and how many."""

    sku: str = Field(pattern=SKU_PATTERN)
    quantity: int = Field(ge=1, le=10_000)


class ReserveInventory(_Contract):
    """Reserve every line or none."""

    order_id: uuid.UUID
    items: list[Line] = Field(min_length=1, max_length=100)


class ReleaseInventory(_Contract):
    """Undo ``ReserveInventory`` for the saga (a no-op when nothing was reserved)."""

    order_id: uuid.UUID


class AuthorizePayment(_Contract):
    """Authorize ``amount_cents`` against the customer's remaining credit."""

    order_id: uuid.UUID
    customer_id: str = Field(min_length=1, max_length=64)
    amount_cents: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class VoidPayment(_Contract):
    """Undo ``AuthorizePayment`` for the saga (a no-op when nothing was authorized)."""

    order_id: uuid.UUID


class NotifyCustomer(_Contract):
    """Tell the customer how their order ended."""

    order_id: uuid.UUID
    customer_id: str = Field(min_length=1, max_length=64)
    template: Literal["order_approved", "order_rejected"]
    reason: str | None = None


# Reply message types, by command.
INVENTORY_RESERVED = "InventoryReserved"
INVENTORY_RESERVATION_REJECTED = "InventoryReservationRejected"
INVENTORY_RELEASED = "InventoryReleased"
PAYMENT_AUTHORIZED = "PaymentAuthorized"
PAYMENT_REJECTED = "PaymentRejected"
PAYMENT_VOIDED = "PaymentVoided"
CUSTOMER_NOTIFIED = "CustomerNotified"

OUT_OF_STOCK = "out_of_stock"
INSUFFICIENT_FUNDS = "insufficient_funds"


# Reply payloads. Every reply carries the participant protocol's ``outcome`` and
# ``reason`` (see ``orchestrator.protocol.make_reply``) plus the detail keys its handler
# adds; ``outcome`` values are those of ``orchestrator.state.Outcome``.


class InventoryReserved(_Contract):
    """Every line of the order is reserved."""

    outcome: Literal["succeeded"]
    reason: None = None
    reused: bool = Field(
        default=False,
        description="True when the reply repeats an earlier attempt's reservation "
        "(the stock was touched once).",
    )


class InventoryReservationRejected(_Contract):
    """Nothing was reserved: a SKU is unknown or short of stock."""

    outcome: Literal["rejected"]
    reason: Literal["out_of_stock"]
    skus: list[str] | None = Field(
        default=None,
        description="The SKUs that were short; absent when the reply repeats an earlier "
        "decision for the saga.",
    )


class InventoryReleased(_Contract):
    """The saga's reservation is given back (or there was none to give back)."""

    outcome: Literal["succeeded"]
    reason: None = None


class PaymentAuthorized(_Contract):
    """The order total is authorized against the customer's credit."""

    outcome: Literal["succeeded"]
    reason: None = None
    reused: bool = Field(
        default=False,
        description="True when the reply repeats an earlier attempt's authorization "
        "(the credit was touched once).",
    )


class PaymentRejected(_Contract):
    """The customer's remaining credit does not cover the order total."""

    outcome: Literal["rejected"]
    reason: Literal["insufficient_funds"]
    remaining_cents: int | None = Field(
        default=None,
        description="The customer's remaining credit when the decision was made; absent "
        "when the reply repeats an earlier decision for the saga.",
    )


class PaymentVoided(_Contract):
    """The saga's authorization is released (or there was none to release)."""

    outcome: Literal["succeeded"]
    reason: None = None


class CustomerNotified(_Contract):
    """The customer's message is recorded."""

    outcome: Literal["succeeded"]
    reason: None = None
