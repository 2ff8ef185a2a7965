"""HTTP bodies of the orders API: validated at the edge, strict about unknown fields."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from pydantic.config import JsonDict

from sagaway.orchestrator.history import HistoryRow
from sagaway.services.contracts import SKU_PATTERN

# Example values shared by the models' OpenAPI examples, so the examples agree.
_ORDER_ID = "0f8b6c2e-4a7d-4c1e-9a53-2d6f1e8b7c90"
_SAGA_ID = "5b1d3c7a-9e2f-4b8a-8c6d-1a2b3c4d5e6f"
_MESSAGE_ID = "c3a9e1f4-7b2d-4e6a-9f1c-8d5b2a7e3f10"
_T0 = "2025-03-01T12:00:00.120000Z"
_T1 = "2025-03-01T12:00:00.180000Z"
_T2 = "2025-03-01T12:00:00.240000Z"
CURSOR_EXAMPLE = "1740830400120000-5b1d3c7a9e2f4b8a8c6d1a2b3c4d5e6f"
"""The cursor the saga lists hand out after the example saga (created at ``_T0``)."""
_DEAD_LETTER: JsonDict = {
    "message_id": _MESSAGE_ID,
    "message_type": "AuthorizePayment",
    "reason": "rejected",
    "deliveries": 1,
    "body": '{"message_id": "' + _MESSAGE_ID + '", "message_type": "AuthorizePayment", ...}',
}
_ITEM: JsonDict = {"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1500}
_STEP: JsonDict = {
    "name": "reserve_inventory",
    "status": "SUCCEEDED",
    "attempts": 1,
    "started_at": _T0,
    "finished_at": _T1,
    "error": None,
}
_SAGA: JsonDict = {
    "saga_id": _SAGA_ID,
    "saga_type": "order_fulfillment",
    "order_id": _ORDER_ID,
    "status": "RUNNING",
    "current_step": "authorize_payment",
    "steps": [
        _STEP,
        {
            "name": "authorize_payment",
            "status": "RUNNING",
            "attempts": 1,
            "started_at": _T1,
            "finished_at": None,
            "error": None,
        },
        {
            "name": "approve_order",
            "status": "PENDING",
            "attempts": 0,
            "started_at": None,
            "finished_at": None,
            "error": None,
        },
        {
            "name": "notify_customer",
            "status": "PENDING",
            "attempts": 0,
            "started_at": None,
            "finished_at": None,
            "error": None,
        },
    ],
    "failure_reason": None,
    "created_at": _T0,
    "updated_at": _T1,
}


def _integral_float_as_int(value: object) -> object:
    # JSON has one number type: to JSON Schema, which the OpenAPI document speaks,
    # ``2.0`` and ``2e3`` are integers. Strict mode would refuse them; lax mode would
    # also take ``"2"`` and ``true``, which are not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


INTEGRAL = BeforeValidator(_integral_float_as_int)
"""Last in a ``StrictInt`` field's ``Annotated[...]`` (after its ``Field``, so that the
document keeps ``minimum`` and ``maximum``): an integer as JSON Schema means it, ``2`` or
``2.0``, never ``2.5``, ``"2"`` or ``true``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderItem(_Strict):
    """One line of an order."""

    model_config = ConfigDict(json_schema_extra={"examples": [_ITEM]})

    sku: Annotated[StrictStr, Field(pattern=SKU_PATTERN, examples=["SKU-1"])]
    quantity: Annotated[StrictInt, Field(ge=1, le=10_000, examples=[2]), INTEGRAL]
    unit_price_cents: Annotated[StrictInt, Field(ge=0, le=1_000_000_000, examples=[1500]), INTEGRAL]


class OrderRequest(_Strict):
    """Body of ``POST /orders``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "c-42",
                    "items": [_ITEM, {"sku": "SKU-2", "quantity": 1, "unit_price_cents": 990}],
                    "currency": "USD",
                }
            ]
        }
    )

    customer_id: Annotated[StrictStr, Field(min_length=1, max_length=64, examples=["c-42"])]
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=100)]
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$", examples=["USD"])] = "USD"

    @property
    def total_cents(self) -> int:
        """Sum of quantity times unit price."""
        return sum(i.quantity * i.unit_price_cents for i in self.items)


class OrderAccepted(BaseModel):
    """Answer of ``POST /orders``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"order_id": _ORDER_ID, "saga_id": _SAGA_ID, "status": "PENDING"}]
        }
    )

    order_id: uuid.UUID
    saga_id: uuid.UUID
    status: Literal["PENDING"] = "PENDING"


class OrderView(BaseModel):
    """``GET /orders/{order_id}``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": _ORDER_ID,
                    "saga_id": _SAGA_ID,
                    "customer_id": "c-42",
                    "items": [_ITEM],
                    "total_cents": 3000,
                    "currency": "USD",
                    "status": "REJECTED",
                    "rejection_reason": "insufficient_funds",
                    "created_at": _T0,
                    "updated_at": _T2,
                }
            ]
        }
    )

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

    model_config = ConfigDict(json_schema_extra={"examples": [_STEP]})

    name: str
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class SagaView(BaseModel):
    """``GET /sagas/{saga_id}``."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SAGA]})

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

    model_config = ConfigDict(json_schema_extra={"examples": [{"available": 1000}]})

    available: Annotated[StrictInt, Field(ge=0, le=2_000_000_000), INTEGRAL]


class InventoryView(BaseModel):
    """``GET /admin/inventory/{sku}``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sku": "SKU-1", "available": 998, "reserved": 2}]}
    )

    sku: str
    available: int
    reserved: int


class CustomerUpdate(_Strict):
    """Body of ``PUT /admin/customers/{customer_id}``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"credit_limit_cents": 100_000}]})

    credit_limit_cents: Annotated[StrictInt, Field(ge=0, le=9_000_000_000_000_000), INTEGRAL]


class CustomerView(BaseModel):
    """``GET /admin/customers/{customer_id}``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"customer_id": "c-42", "credit_limit_cents": 100_000, "authorized_cents": 3000}
            ]
        }
    )

    customer_id: str
    credit_limit_cents: int
    authorized_cents: int


class SagaPage(BaseModel):
    """``GET /admin/sagas``: newest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [_SAGA],
                    # Pass it back as ``cursor`` for the next page.
                    "next_cursor": CURSOR_EXAMPLE,
                }
            ]
        }
    )

    items: list[SagaView]
    next_cursor: str | None


class SagaActionAccepted(BaseModel):
    """``POST /admin/sagas/{id}/retry|abort``: the saga's status once the action is in."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"saga_id": _SAGA_ID, "status": "RUNNING"}]}
    )

    saga_id: uuid.UUID
    status: str


class HistoryItem(BaseModel):
    """One entry of a saga's history: typed fields, and ``detail``, a sentence made of
    them for people (which fields are set depends on ``kind``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "at": _T1,
                    "kind": "command_sent",
                    "step": "authorize_payment",
                    "message_id": _MESSAGE_ID,
                    "detail": "AuthorizePayment to payment (action, attempt 1)",
                    "attempt": 1,
                    "purpose": "action",
                    "outcome": None,
                    "reason": None,
                    "message_type": "AuthorizePayment",
                    "participant": "payment",
                    "handler": None,
                    "actor": None,
                    "delay_s": None,
                    "note": None,
                }
            ]
        }
    )

    at: datetime
    kind: str = Field(description="what happened: command_sent, reply_received, step_succeeded…")
    step: str | None
    message_id: uuid.UUID | None
    detail: str = Field(description="the entry as a sentence, rendered from the fields")
    attempt: int | None = Field(default=None, description="attempt number within its budget")
    purpose: str | None = Field(default=None, description="action, compensation or epilogue")
    outcome: str | None = Field(
        default=None,
        description="succeeded, rejected, failed or timeout; the final status for saga_ended",
    )
    reason: str | None = Field(default=None, description="rejection reason or error")
    message_type: str | None = Field(default=None, description="command sent or reply received")
    participant: str | None = Field(default=None, description="where a command went")
    handler: str | None = Field(default=None, description="the local action that ran")
    actor: str | None = Field(default=None, description="who asked, for admin_retry/admin_abort")
    delay_s: float | None = Field(default=None, description="backoff before the next attempt")
    note: str | None = Field(default=None, description="prose, for entries with nothing else")

    @classmethod
    def of(cls, row: HistoryRow) -> HistoryItem:
        """The API's view of a stored history entry."""
        return cls(
            at=row.at,
            kind=row.kind.value,
            step=row.step,
            message_id=row.message_id,
            detail=row.detail,
            attempt=row.attempt,
            purpose=None if row.purpose is None else row.purpose.value,
            outcome=row.outcome,
            reason=row.reason,
            message_type=row.message_type,
            participant=row.participant,
            handler=row.handler,
            actor=row.actor,
            delay_s=row.delay_s,
            note=row.note,
        )


class FaultUpdate(_Strict):
    """Body of ``PUT /admin/faults/{participant}``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"mode": "unavailable"}]})

    mode: Literal["ok", "unavailable"]


class FaultView(BaseModel):
    """A participant's fault mode."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"participant": "payment", "mode": "unavailable"}]}
    )

    participant: str
    mode: Literal["ok", "unavailable"]


class DeadLetterView(BaseModel):
    """A dead-lettered message."""

    model_config = ConfigDict(json_schema_extra={"examples": [_DEAD_LETTER]})

    message_id: str | None
    message_type: str | None
    reason: str | None
    deliveries: int | None
    body: str


class DeadLetterQueueView(BaseModel):
    """A dead-letter queue's size and its first messages."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"queue": "sagaway.payment.dead", "count": 1, "messages": [_DEAD_LETTER]}]
        }
    )

    queue: str
    count: int
    messages: list[DeadLetterView]
