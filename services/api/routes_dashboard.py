"""The operator dashboard: its page at ``/ui`` and the JSON it reads under ``/admin``."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Query
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime, BeforeValidator

from sagaway.orchestrator.coordinator import SagaNotFound
from sagaway.orchestrator.queries import SagaFilter
from sagaway.orchestrator.state import SagaStatus
from sagaway.services.api.dependencies import (
    AdminDep,
    ApplicationDep,
    CoordinatorDep,
    SessionDep,
    SettingsDep,
)
from sagaway.services.api.responses import UNAUTHORIZED, UNAVAILABLE, not_a_uuid, problem
from sagaway.services.api.routes_admin_sagas import BAD_FILTER, Cursor
from sagaway.services.api.routes_sagas import saga_view
from sagaway.services.api.schemas import HistoryItem
from sagaway.services.api.schemas_dashboard import (
    DeadLetterCountView,
    LaneView,
    MinuteBucketView,
    OutboxBacklogView,
    OverviewView,
    SagaActionsView,
    SagaSearchPage,
    SagaSummaryView,
    SagaTimelineView,
)
from sagaway.services.ops import dashboard

UI_DIR = Path(__file__).resolve().parent / "ui"

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339_only(value: object) -> object:
    # The document says ``format: date-time``, which is RFC 3339; pydantic alone would
    # also take a number of seconds since 1970 (``0.5``) or a bare date.
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("not an RFC 3339 date-time such as 2025-03-01T12:00:00Z")
    return value


DateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]

router = APIRouter(
    prefix="/admin", tags=["dashboard"], responses={401: UNAUTHORIZED, 503: UNAVAILABLE}
)


def ui_files() -> StaticFiles:
    """The dashboard's page, scripts and styles, mounted at ``/ui`` (plain files: no
    build step, no CDN)."""
    return StaticFiles(directory=UI_DIR, html=True)


@router.get("/overview", response_model=OverviewView)
async def get_overview(
    session: SessionDep, settings: SettingsDep, app: ApplicationDep, _: AdminDep
) -> OverviewView:
    """Sagas by status, sagas ended per minute over the last 15 minutes, outbox backlog
    and dead letters (``null`` with the reason when RabbitMQ cannot be asked)."""
    view = await dashboard.overview(session, settings, app)
    return OverviewView(
        at=view.at,
        counts=view.counts,
        estimated=view.estimated,
        count_cap=view.count_cap,
        throughput=[MinuteBucketView(minute=b.minute, counts=b.counts) for b in view.throughput],
        outbox=[
            OutboxBacklogView(
                outbox=o.outbox,
                unpublished=o.unpublished,
                oldest_at=o.oldest_at,
                oldest_age_s=o.oldest_age_s,
                dead=o.dead,
            )
            for o in view.outbox
        ],
        dead_letters=(
            [DeadLetterCountView(queue=d.queue, count=d.count) for d in view.dead_letters]
            if view.dead_letters is not None
            else None
        ),
        dead_letters_error=view.dead_letters_error,
        saga_types=view.saga_types,
    )


@router.get(
    "/sagas/search",
    response_model=SagaSearchPage,
    responses={422: BAD_FILTER},
)
async def search_sagas(
    session: SessionDep,
    _: AdminDep,
    status: SagaStatus | None = None,
    saga_type: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    order_id: uuid.UUID | None = None,
    customer_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    created_from: Annotated[
        DateTime | None, Query(description="Inclusive; with a time zone")
    ] = None,
    created_to: Annotated[DateTime | None, Query(description="Exclusive; with a time zone")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> SagaSearchPage:
    """Sagas matching every given filter, newest first, ``limit`` at a time.

    Each filter is served by an index ordered like the list, so every page, the
    ten-thousandth too, reads about ``limit`` rows.
    """
    filters = SagaFilter(
        status=status,
        saga_type=saga_type,
        order_id=order_id,
        customer_id=customer_id,
        created_from=created_from,
        created_to=created_to,
    )
    page = await dashboard.search(session, filters, limit=limit, cursor=cursor)
    return SagaSearchPage(
        items=[
            SagaSummaryView(
                saga_id=s.id,
                saga_type=s.saga_type,
                order_id=s.order_id,
                customer_id=s.customer_id,
                status=s.status,
                current_step=s.current_step,
                failure_reason=s.failure_reason,
                created_at=s.created_at,
                updated_at=s.updated_at,
            )
            for s in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/sagas/{saga_id}/timeline",
    response_model=SagaTimelineView,
    responses={404: problem("No saga has this id", "saga not found"), 422: not_a_uuid("saga_id")},
)
async def get_timeline(
    saga_id: uuid.UUID, session: SessionDep, coordinator: CoordinatorDep, _: AdminDep
) -> SagaTimelineView:
    """The saga, its definition's steps, its whole history, and whether retry and abort
    would be accepted now (and why not)."""
    structlog.contextvars.bind_contextvars(saga_id=str(saga_id))
    try:
        story = await dashboard.saga_story(session, coordinator, saga_id)
    except SagaNotFound as exc:
        raise HTTPException(status_code=404, detail="saga not found") from exc
    customer = story.record.data.get("customer_id")
    return SagaTimelineView(
        saga=saga_view(story.record),
        customer_id=customer if isinstance(customer, str) else None,
        lanes=[
            LaneView(
                name=lane.name, action=lane.action, compensation=lane.compensation, pivot=lane.pivot
            )
            for lane in story.lanes
        ],
        epilogue=story.epilogue,
        history=[HistoryItem.of(h) for h in story.history],
        actions=SagaActionsView(
            retry=story.can_retry, abort=story.can_abort, abort_blocked=story.abort_blocked
        ),
    )
