"""Message contracts of the order saga's participants: commands and their replies.

Commands are imperative (``ReserveInventory``); replies are past tense
(``InventoryReserved``) and carry the participant protocol's outcome.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
COMMAND_FAILED = "CommandFailed"

OUT_OF_STOCK = "out_of_stock"
INSUFFICIENT_FUNDS = "insufficient_funds"
