"""``GET /sagas/{saga_id}``: where a saga is."""

from __future__ import annotations

import uuid

import structlog
from fastapi import APIRouter, HTTPException

from orchestrator.repository import SagaRecord
from services.orders.dependencies import EngineDep, SessionDep
from services.orders.responses import not_a_uuid, problem
from services.orders.schemas import HistoryItem, SagaView, StepView

router = APIRouter(tags=["sagas"])

_MESSAGE_ID = "c3a9e1f4-7b2d-4e6a-9f1c-8d5b2a7e3f10"
_REPLY_ID = "9d2e4f6a-1b3c-4d5e-8f7a-6b5c4d3e2f1a"
_HISTORY_EXAMPLE = [
    {
        "at": "2025-03-01T12:00:00.180000Z",
        "kind": "command_sent",
        "step": "authorize_payment",
        "message_id": _MESSAGE_ID,
        "detail": "AuthorizePayment to payment (action, attempt 1)",
    },
    {
        "at": "2025-03-01T12:00:00.240000Z",
        "kind": "reply_received",
        "step": "authorize_payment",
        "message_id": _REPLY_ID,
        "detail": "PaymentRejected (rejected: insufficient_funds)",
    },
    {
        "at": "2025-03-01T12:00:00.240000Z",
        "kind": "transition",
        "step": "reserve_inventory",
        "message_id": None,
        "detail": "step authorize_payment rejected: insufficient_funds",
    },
]


def saga_view(record: SagaRecord) -> SagaView:
    """The API's view of a saga record."""
    state = record.state
    return SagaView(
        saga_id=record.id,
        saga_type=record.saga_type,
        order_id=record.order_id,
        status=state.status.value,
        current_step=state.current_step,
        steps=[
            StepView(
                name=s.name,
                status=s.status.value,
                attempts=s.attempts,
                started_at=s.started_at,
                finished_at=s.finished_at,
                error=s.error,
            )
            for s in state.steps
        ],
        failure_reason=state.failure_reason,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


@router.get(
    "/sagas/{saga_id}",
    response_model=SagaView,
    responses={404: problem("Unknown saga", "saga not found"), 422: not_a_uuid("saga_id")},
)
async def get_saga(saga_id: uuid.UUID, session: SessionDep, engine: EngineDep) -> SagaView:
    """The saga, every step of its definition, and why it failed if it did."""
    structlog.contextvars.bind_contextvars(saga_id=str(saga_id))
    record = await engine.repository.get(session, saga_id)
    if record is None:
        raise HTTPException(status_code=404, detail="saga not found")
    return saga_view(record)


@router.get(
    "/sagas/{saga_id}/history",
    response_model=list[HistoryItem],
    responses={
        200: {"content": {"application/json": {"example": _HISTORY_EXAMPLE}}},
        404: problem("Unknown saga", "saga not found"),
        422: not_a_uuid("saga_id"),
    },
)
async def get_saga_history(
    saga_id: uuid.UUID, session: SessionDep, engine: EngineDep
) -> list[HistoryItem]:
    """Everything that happened to the saga, oldest first: commands sent, replies
    received (stale ones too), transitions, retries and admin actions."""
    if await engine.repository.get(session, saga_id) is None:
        raise HTTPException(status_code=404, detail="saga not found")
    rows = await engine.repository.history(session, saga_id)
    return [
        HistoryItem(at=r.at, kind=r.kind, step=r.step, message_id=r.message_id, detail=r.detail)
        for r in rows
    ]
