"""``/admin/sagas`` and ``/admin/dead-letters``: repairing what went wrong."""

from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Query
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.coordinator import SagaCoordinator, SagaNotFound
from sagaway.orchestrator.state import SagaStatus
from sagaway.orchestrator.state_machine import InvalidRequest
from sagaway.outbox.amqp import Topology, connect
from sagaway.outbox.dead_letters import peek
from sagaway.outbox.errors import BrokerUnavailable
from sagaway.services.api.dependencies import (
    AdminDep,
    ApplicationDep,
    CoordinatorDep,
    SessionDep,
    SettingsDep,
)
from sagaway.services.api.responses import (
    UNAUTHORIZED,
    UNAVAILABLE,
    invalid,
    not_a_uuid,
    problem,
)
from sagaway.services.api.routes_sagas import saga_view
from sagaway.services.api.schemas import (
    CURSOR_EXAMPLE,
    DeadLetterQueueView,
    DeadLetterView,
    SagaActionAccepted,
    SagaPage,
)
from sagaway.services.ops.sagas import (
    CURSOR_PATTERN,
    SagaAction,
    abort_saga,
    list_sagas,
    retry_saga,
)

router = APIRouter(prefix="/admin", tags=["admin"], responses={401: UNAUTHORIZED, 503: UNAVAILABLE})

Cursor = Annotated[
    str | None,
    Query(
        pattern=CURSOR_PATTERN,
        description="The `next_cursor` of the previous page. Any string of this form is a "
        "cursor: the page holds the sagas created before the point it names.",
        examples=[CURSOR_EXAMPLE],
    ),
]
BAD_FILTER = invalid(
    "Bad filter, limit or cursor",
    {
        "detail": [
            {
                "loc": ["query", "cursor"],
                "msg": f"String should match pattern '{CURSOR_PATTERN}'",
                "type": "string_pattern_mismatch",
            }
        ]
    },
)

_SAGA_ID = "5b1d3c7a-9e2f-4b8a-8c6d-1a2b3c4d5e6f"
_DEAD_LETTERS_EXAMPLE = [
    {"queue": f"sagaway.{consumer}.dead", "count": 0, "messages": []}
    for consumer in ("inventory", "payment", "notification")
] + [
    {
        "queue": "sagaway.orchestrator.dead",
        "count": 1,
        "messages": [
            {
                "message_id": "9d2e4f6a-1b3c-4d5e-8f7a-6b5c4d3e2f1a",
                "message_type": None,
                "reason": "rejected",
                "deliveries": 1,
                "body": "not json",
            }
        ],
    }
]


@router.get(
    "/sagas",
    response_model=SagaPage,
    responses={
        422: BAD_FILTER,
    },
)
async def get_sagas(
    session: SessionDep,
    coordinator: CoordinatorDep,
    _: AdminDep,
    status: SagaStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> SagaPage:
    """Sagas newest first, optionally of one status, ``limit`` at a time."""
    page = await list_sagas(session, coordinator, status=status, limit=limit, cursor=cursor)
    return SagaPage(items=[saga_view(r) for r in page.items], next_cursor=page.next_cursor)


@router.post(
    "/sagas/{saga_id}/retry",
    status_code=202,
    response_model=SagaActionAccepted,
    responses={
        404: problem("Unknown saga", "saga not found"),
        409: problem("The saga is not FAILED", "saga is RUNNING, not FAILED"),
        422: not_a_uuid("saga_id"),
    },
)
async def post_retry(
    saga_id: uuid.UUID, session: SessionDep, coordinator: CoordinatorDep, actor: AdminDep
) -> SagaActionAccepted:
    """Resume a FAILED saga where it failed, with a fresh attempt budget.

    The saga row is locked while the request runs: of concurrent retries one wins and
    the others find it no longer FAILED (409).
    """
    return await _operate(retry_saga, saga_id, session, coordinator, actor)


@router.post(
    "/sagas/{saga_id}/abort",
    status_code=202,
    response_model=SagaActionAccepted,
    responses={
        202: {
            "content": {
                "application/json": {"example": {"saga_id": _SAGA_ID, "status": "COMPENSATING"}}
            }
        },
        404: problem("Unknown saga", "saga not found"),
        409: problem(
            "Not FAILED, or past the pivot",
            "saga has passed its pivot and can no longer be compensated",
        ),
        422: not_a_uuid("saga_id"),
    },
)
async def post_abort(
    saga_id: uuid.UUID, session: SessionDep, coordinator: CoordinatorDep, actor: AdminDep
) -> SagaActionAccepted:
    """Compensate a FAILED saga that has not passed its pivot; it ends COMPENSATED."""
    return await _operate(abort_saga, saga_id, session, coordinator, actor)


async def _operate(
    action: SagaAction,
    saga_id: uuid.UUID,
    session: AsyncSession,
    coordinator: SagaCoordinator,
    actor: str,
) -> SagaActionAccepted:
    """Run an operator action in its own transaction; map refusals to 404 and 409."""
    structlog.contextvars.bind_contextvars(saga_id=str(saga_id))
    try:
        async with session.begin():
            state = await action(session, coordinator, saga_id, actor=actor)
    except SagaNotFound as exc:
        raise HTTPException(status_code=404, detail="saga not found") from exc
    except InvalidRequest as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return SagaActionAccepted(saga_id=saga_id, status=state.status.value)


@router.get(
    "/dead-letters",
    response_model=list[DeadLetterQueueView],
    responses={
        200: {"content": {"application/json": {"example": _DEAD_LETTERS_EXAMPLE}}},
        422: invalid("Bad limit"),
        503: problem("RabbitMQ unavailable", "rabbitmq unavailable"),
    },
)
async def get_dead_letters(
    settings: SettingsDep,
    app: ApplicationDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=0, le=100)] = 20,
) -> list[DeadLetterQueueView]:
    """Every dead-letter queue with its size and first messages (left in place)."""
    topology: Topology = app.topology_for(settings)
    names = [topology.dead_letter_queue(q.name) for q in topology.queues]
    try:
        connection = await connect(settings.amqp_url, name="sagaway-api-dead-letters")
        try:
            queues = await peek(connection, names, limit=limit)
        finally:
            await connection.close()
    except BrokerUnavailable as exc:
        # Lost before or while reading: either way RabbitMQ cannot be asked now.
        raise HTTPException(status_code=503, detail="rabbitmq unavailable") from exc
    return [
        DeadLetterQueueView(
            queue=q.queue,
            count=q.count,
            messages=[
                DeadLetterView(
                    message_id=m.message_id,
                    message_type=m.message_type,
                    reason=m.reason,
                    deliveries=m.deliveries,
                    body=m.body,
                )
                for m in q.messages
            ],
        )
        for q in queues
    ]
