"""``GET /sagas/{saga_id}``: where a saga is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Query

from sagaway.orchestrator.history import HistoryKind, HistoryRow, Purpose
from sagaway.orchestrator.repository import SagaRecord
from sagaway.services.api.dependencies import (
    CoordinatorDep,
    ReadSessionsDep,
    SessionDep,
    WatcherDep,
)
from sagaway.services.api.responses import UNAVAILABLE, invalid, not_a_uuid, problem
from sagaway.services.api.schemas import HistoryItem, SagaView, StepView

router = APIRouter(tags=["sagas"], responses={503: UNAVAILABLE})

TERMINAL = frozenset({"COMPLETED", "COMPENSATED", "FAILED"})
MAX_WAIT_S = 30

WaitS = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        description="Hold the answer until the saga is terminal (`COMPLETED`, `COMPENSATED`, "
        "`FAILED`) or this many seconds have passed, then answer as usual; 0 answers at "
        "once. A waiting request costs no database query while it waits: the end of the "
        "saga wakes it.",
        examples=[30],
    ),
]

_MESSAGE_ID = "c3a9e1f4-7b2d-4e6a-9f1c-8d5b2a7e3f10"
_REPLY_ID = "9d2e4f6a-1b3c-4d5e-8f7a-6b5c4d3e2f1a"
_T_SENT = datetime(2025, 3, 1, 12, 0, 0, 180000, tzinfo=UTC)
_T_REPLY = datetime(2025, 3, 1, 12, 0, 0, 240000, tzinfo=UTC)
# Made from typed entries, so the example's sentences are the ones the API renders.
_HISTORY_EXAMPLE = [
    HistoryItem.of(row).model_dump(mode="json")
    for row in (
        HistoryRow(
            at=_T_SENT,
            kind=HistoryKind.COMMAND_SENT,
            step="authorize_payment",
            attempt=1,
            purpose=Purpose.ACTION,
            message_type="AuthorizePayment",
            participant="payment",
            message_id=uuid.UUID(_MESSAGE_ID),
        ),
        HistoryRow(
            at=_T_REPLY,
            kind=HistoryKind.REPLY_RECEIVED,
            step="authorize_payment",
            attempt=1,
            outcome="rejected",
            reason="insufficient_funds",
            message_type="PaymentRejected",
            message_id=uuid.UUID(_REPLY_ID),
        ),
        HistoryRow(
            at=_T_REPLY,
            kind=HistoryKind.STEP_REJECTED,
            step="authorize_payment",
            reason="insufficient_funds",
        ),
    )
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
    responses={
        404: problem("Unknown saga", "saga not found"),
        422: invalid(
            "`saga_id` is not a UUID, or `wait_s` is not a number from 0 to 30",
            {
                "detail": [
                    {
                        "loc": ["query", "wait_s"],
                        "msg": "Input should be less than or equal to 30",
                        "type": "less_than_equal",
                    }
                ]
            },
        ),
    },
)
async def get_saga(
    saga_id: uuid.UUID,
    sessions: ReadSessionsDep,
    coordinator: CoordinatorDep,
    watcher: WatcherDep,
    wait_s: WaitS = 0,
) -> SagaView:
    """The saga, every step of its definition, and why it failed if it did.

    With `wait_s`, a client that wants the outcome need not poll: the answer comes as
    soon as the saga is terminal, or after `wait_s` seconds with the saga as it is then.
    """
    structlog.contextvars.bind_contextvars(saga_id=str(saga_id))

    # A transaction per read: a long poll holds no connection while it waits.
    async def read() -> SagaRecord | None:
        async with sessions() as session:
            return await coordinator.repository.get(session, saga_id)

    if wait_s > 0:
        record = await watcher.wait_until(
            saga_id, wait_s, read, lambda r: r.state.status.value in TERMINAL
        )
    else:
        record = await read()
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
    saga_id: uuid.UUID, session: SessionDep, coordinator: CoordinatorDep
) -> list[HistoryItem]:
    """Everything that happened to the saga, oldest first: commands sent, replies
    received (stale ones too), transitions, retries and admin actions."""
    if await coordinator.repository.get(session, saga_id) is None:
        raise HTTPException(status_code=404, detail="saga not found")
    rows = await coordinator.repository.history(session, saga_id)
    return [HistoryItem.of(r) for r in rows]
