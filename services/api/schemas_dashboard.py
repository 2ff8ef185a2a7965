"""HTTP bodies of the dashboard's endpoints (``/admin/overview``, saga search, timeline)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic.config import JsonDict

from sagaway.services.api.schemas import CURSOR_EXAMPLE, HistoryItem, SagaView

# Example values for the OpenAPI document, consistent across the models.
_SAGA_ID = "5b1d3c7a-9e2f-4b8a-8c6d-1a2b3c4d5e6f"
_ORDER_ID = "0f8b6c2e-4a7d-4c1e-9a53-2d6f1e8b7c90"
_NOW = "2025-03-01T12:15:00.000000Z"
_MINUTE: JsonDict = {
    "minute": "2025-03-01T12:14:00Z",
    "counts": {"COMPLETED": 118, "COMPENSATED": 4, "FAILED": 1},
}
_BACKLOG: JsonDict = {
    "outbox": "orchestrator",
    "unpublished": 3,
    "oldest_at": "2025-03-01T12:14:59.870000Z",
    "oldest_age_s": 0.13,
    "dead": 0,
}
_SUMMARY: JsonDict = {
    "saga_id": _SAGA_ID,
    "saga_type": "order_fulfillment",
    "order_id": _ORDER_ID,
    "customer_id": "c-42",
    "status": "FAILED",
    "current_step": "authorize_payment",
    "failure_reason": "authorize_payment failed after 5 attempts: no reply within 30s",
    "created_at": "2025-03-01T12:00:00.120000Z",
    "updated_at": "2025-03-01T12:02:41.300000Z",
}
_LANE: JsonDict = {
    "name": "authorize_payment",
    "action": "AuthorizePayment to payment",
    "compensation": "VoidPayment to payment",
    "pivot": False,
}


def _example_of(model: type[BaseModel]) -> JsonDict:
    examples = model.model_json_schema().get("examples") or [{}]
    example: JsonDict = examples[0]
    return example


class MinuteBucketView(BaseModel):
    """Sagas that ended during one minute, by final status."""

    model_config = ConfigDict(json_schema_extra={"examples": [_MINUTE]})

    minute: datetime
    counts: dict[str, int]


class OutboxBacklogView(BaseModel):
    """Rows of one service's outbox still to be published (``unpublished``, the oldest
    written ``oldest_age_s`` seconds ago) and rows the relay gave up on (``dead``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_BACKLOG]})

    outbox: str
    unpublished: int
    oldest_at: datetime | None
    oldest_age_s: float | None
    dead: int


class DeadLetterCountView(BaseModel):
    """Messages in one dead-letter queue."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"queue": "sagaway.payment.dead", "count": 0}]}
    )

    queue: str
    count: int


class OverviewView(BaseModel):
    """``GET /admin/overview``.

    ``counts`` are exact below ``count_cap``; the statuses listed in ``estimated``
    have more sagas than that and are counted from the table's statistics;
    ``dead_letters`` is null when RabbitMQ could not be asked, with the reason in
    ``dead_letters_error``.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "at": _NOW,
                    "counts": {
                        "RUNNING": 12,
                        "COMPENSATING": 0,
                        "COMPLETED": 1_250_000,
                        "COMPENSATED": 4_210,
                        "FAILED": 1,
                    },
                    "estimated": ["COMPLETED"],
                    "count_cap": 50_000,
                    "throughput": [_MINUTE],
                    "outbox": [_BACKLOG],
                    "dead_letters": [{"queue": "sagaway.payment.dead", "count": 0}],
                    "dead_letters_error": None,
                    "saga_types": ["order_fulfillment"],
                }
            ]
        }
    )

    at: datetime
    counts: dict[str, int]
    estimated: list[str]
    count_cap: int
    throughput: list[MinuteBucketView]
    outbox: list[OutboxBacklogView]
    dead_letters: list[DeadLetterCountView] | None
    dead_letters_error: str | None
    saga_types: list[str]


class SagaSummaryView(BaseModel):
    """One line of ``GET /admin/sagas/search``."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SUMMARY]})

    saga_id: uuid.UUID
    saga_type: str
    order_id: uuid.UUID | None
    customer_id: str | None
    status: str
    current_step: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class SagaSearchPage(BaseModel):
    """``GET /admin/sagas/search``: newest first; pass ``next_cursor`` for the next page."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [_SUMMARY],
                    "next_cursor": CURSOR_EXAMPLE,
                }
            ]
        }
    )

    items: list[SagaSummaryView]
    next_cursor: str | None


class LaneView(BaseModel):
    """A step of the saga's definition: what it sends, what undoes it, is it the pivot."""

    model_config = ConfigDict(json_schema_extra={"examples": [_LANE]})

    name: str
    action: str
    compensation: str | None
    pivot: bool


class SagaActionsView(BaseModel):
    """Which operator actions the saga accepts now, and why abort would be refused."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"retry": True, "abort": True, "abort_blocked": None}]}
    )

    retry: bool
    abort: bool
    abort_blocked: str | None


class SagaTimelineView(BaseModel):
    """``GET /admin/sagas/{saga_id}/timeline``: the saga page in one call."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "saga": _example_of(SagaView),
                    "customer_id": "c-42",
                    "lanes": [_LANE],
                    "epilogue": ["local orders.reject", "NotifyCustomer to notification"],
                    "history": [_example_of(HistoryItem)],
                    "actions": {"retry": False, "abort": False, "abort_blocked": None},
                }
            ]
        }
    )

    saga: SagaView
    customer_id: str | None
    lanes: list[LaneView]
    epilogue: list[str]
    history: list[HistoryItem]
    actions: SagaActionsView
