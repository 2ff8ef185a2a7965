"""HTTP bodies of the dashboard's endpoints (``/admin/overview``, saga search, timeline)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from services.orders.schemas import HistoryItem, SagaView


class MinuteBucketView(BaseModel):
    """Sagas that ended during one minute, by final status."""

    minute: datetime
    counts: dict[str, int] = Field(examples=[{"COMPLETED": 42, "COMPENSATED": 3, "FAILED": 0}])


class OutboxBacklogView(BaseModel):
    """Rows of one service's outbox still to be published."""

    outbox: str = Field(examples=["orchestrator"])
    unpublished: int
    oldest_at: datetime | None
    oldest_age_s: float | None


class DeadLetterCountView(BaseModel):
    """Messages in one dead-letter queue."""

    queue: str
    count: int


class OverviewView(BaseModel):
    """``GET /admin/overview``.

    ``counts`` stop at ``count_cap`` (a count equal to it means "at least");
    ``dead_letters`` is null when RabbitMQ could not be asked, with the reason in
    ``dead_letters_error``.
    """

    at: datetime
    counts: dict[str, int] = Field(
        examples=[
            {"RUNNING": 3, "COMPENSATING": 0, "COMPLETED": 1200, "COMPENSATED": 17, "FAILED": 1}
        ]
    )
    count_cap: int
    throughput: list[MinuteBucketView]
    outbox: list[OutboxBacklogView]
    dead_letters: list[DeadLetterCountView] | None
    dead_letters_error: str | None
    saga_types: list[str] = Field(examples=[["order_fulfillment"]])


class SagaSummaryView(BaseModel):
    """One line of ``GET /admin/sagas/search``."""

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

    items: list[SagaSummaryView]
    next_cursor: str | None


class LaneView(BaseModel):
    """A step of the saga's definition: what it sends, what undoes it, is it the pivot."""

    name: str = Field(examples=["authorize_payment"])
    action: str = Field(examples=["AuthorizePayment to payment"])
    compensation: str | None = Field(examples=["VoidPayment to payment"])
    pivot: bool


class SagaActionsView(BaseModel):
    """Which operator actions the saga accepts now."""

    retry: bool
    abort: bool
    abort_blocked: str | None = Field(
        examples=["saga has passed its pivot and can no longer be compensated"]
    )


class SagaTimelineView(BaseModel):
    """``GET /admin/sagas/{saga_id}/timeline``: the saga page in one call."""

    saga: SagaView
    customer_id: str | None
    lanes: list[LaneView]
    epilogue: list[str]
    history: list[HistoryItem]
    actions: SagaActionsView
