"""HTTP bodies of the orders API: validated at the edge, strict about unknown fields."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from services.contracts import SKU_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderItem(_Strict):
    """One line of an order."""

    sku: Annotated[StrictStr, Field(pattern=SKU_PATTERN, examples=["SKU-1"])]
    quantity: Annotated[StrictInt, Field(ge=1, le=10_000, examples=[2])]
    unit_price_cents: Annotated[StrictInt, Field(ge=0, le=1_000_000_000, examples=[1500])]


class OrderRequest(_Strict):
    """Body of ``POST /orders``."""

    customer_id: Annotated[StrictStr, Field(min_length=1, max_length=64, examples=["c-42"])]
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=100)]
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$", examples=["USD"])] = "USD"

    @property
    def total_cents(self) -> int:
        """Sum of quantity times unit price."""
        return sum(i.quantity * i.unit_price_cents for i in self.items)


class OrderAccepted(BaseModel):
    """Answer of ``POST /orders``."""

    order_id: uuid.UUID
    saga_id: uuid.UUID
    status: Literal["PENDING"] = "PENDING"


class OrderView(BaseModel):
    """``GET /orders/{order_id}``."""

    order_id: uuid.UUID
    saga_id: uuid.UUID
    customer_id: str
    items: list[OrderItem]
    total_cents: int
    currency: str
    status: Literal["PENDING", "APPROVED", "REJECTED"]
    rejection_reason: str | None
    created_at: datetime
    updated_at: datetime


class StepView(BaseModel):
    """One step in ``GET /sagas/{saga_id}``."""

    name: str
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class SagaView(BaseModel):
    """``GET /sagas/{saga_id}``."""

    saga_id: uuid.UUID
    saga_type: str
    order_id: uuid.UUID | None
    status: str
    current_step: str | None
    steps: list[StepView]
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class InventoryUpdate(_Strict):
    """Body of ``PUT /admin/inventory/{sku}``."""

    available: Annotated[StrictInt, Field(ge=0, le=2_000_000_000)]


class InventoryView(BaseModel):
    """``GET /admin/inventory/{sku}``."""

    sku: str
    available: int
    reserved: int


class CustomerUpdate(_Strict):
    """Body of ``PUT /admin/customers/{customer_id}``."""

    credit_limit_cents: Annotated[StrictInt, Field(ge=0, le=9_000_000_000_000_000)]


class CustomerView(BaseModel):
    """``GET /admin/customers/{customer_id}``."""

    customer_id: str
    credit_limit_cents: int
    authorized_cents: int


class SagaPage(BaseModel):
    """``GET /admin/sagas``: newest first."""

    items: list[SagaView]
    next_cursor: str | None


class SagaActionAccepted(BaseModel):
    """``POST /admin/sagas/{id}/retry|abort``: the saga's status once the action is in."""

    saga_id: uuid.UUID
    status: str


class HistoryItem(BaseModel):
    """One line of a saga's history."""

    at: datetime
    kind: str
    step: str | None
    message_id: uuid.UUID | None
    detail: str


class FaultUpdate(_Strict):
    """Body of ``PUT /admin/faults/{participant}``."""

    mode: Literal["ok", "unavailable"]


class FaultView(BaseModel):
    """A participant's fault mode."""

    participant: str
    mode: Literal["ok", "unavailable"]


class DeadLetterView(BaseModel):
    """A dead-lettered message."""

    message_id: str | None
    message_type: str | None
    reason: str | None
    deliveries: int | None
    body: str


class DeadLetterQueueView(BaseModel):
    """A dead-letter queue's size and its first messages."""

    queue: str
    count: int
    messages: list[DeadLetterView]
