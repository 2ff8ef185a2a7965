"""``/admin/outbox``: messages the relay could not publish."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict

from sagaway.services.api.dependencies import AdminDep, ApplicationDep, SessionDep
from sagaway.services.api.responses import (
    UNAUTHORIZED,
    UNAVAILABLE,
    invalid,
    not_a_uuid,
    problem,
)
from sagaway.services.ops.audit import record_action
from sagaway.services.ops.outbox_admin import dead_rows, requeue_dead

router = APIRouter(
    prefix="/admin/outbox", tags=["admin"], responses={401: UNAUTHORIZED, 503: UNAVAILABLE}
)

_DEAD_EXAMPLE: dict[str, Any] = {
    "outbox": "sagas",
    "message_id": "0b6f1c2e-3d4a-4b5c-9d8e-7f6a5b4c3d2e",
    "saga_id": "5b1d3c7a-9e2f-4b8a-8c6d-1a2b3c4d5e6f",
    "message_type": "ReserveInventory",
    "exchange": "sagaway.commands",
    "routing_key": "inventory",
    "attempts": 10,
    "last_error": "broker refused message: NO_ROUTE",
    "created_at": "2026-11-23T09:05:28.512846Z",
    "dead_at": "2026-11-23T09:21:02.100000Z",
}


class DeadOutboxMessage(BaseModel):
    """An outbox message parked as dead after failed publishes."""

    model_config = ConfigDict(json_schema_extra={"examples": [_DEAD_EXAMPLE]})

    outbox: str
    message_id: uuid.UUID
    saga_id: uuid.UUID
    message_type: str
    exchange: str
    routing_key: str
    attempts: int
    last_error: str | None
    created_at: datetime
    dead_at: datetime


class Requeued(BaseModel):
    """A dead message given a fresh attempt budget."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"message_id": _DEAD_EXAMPLE["message_id"], "outbox": "sagas"}]
        }
    )

    message_id: uuid.UUID
    outbox: str


@router.get(
    "/dead",
    response_model=list[DeadOutboxMessage],
    responses={
        200: {"content": {"application/json": {"example": [_DEAD_EXAMPLE]}}},
        422: invalid("Bad limit"),
    },
)
async def get_dead(
    session: SessionDep,
    app: ApplicationDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeadOutboxMessage]:
    """Messages the relay gave up on (unroutable, refused, too large), with the last
    error; each holds back only the later messages of its own saga."""
    return [
        DeadOutboxMessage.model_validate(r, from_attributes=True)
        for r in await dead_rows(session, app.outbox_tables, limit=limit)
    ]


@router.post(
    "/dead/{message_id}/retry",
    status_code=202,
    response_model=Requeued,
    responses={
        404: problem("No dead message with that id", "no dead outbox message with that id"),
        422: not_a_uuid("message_id"),
    },
)
async def post_requeue(
    message_id: uuid.UUID, session: SessionDep, app: ApplicationDep, actor: AdminDep
) -> Requeued:
    """Publish a dead message again with a fresh attempt budget (after fixing its cause)."""
    async with session.begin():
        outbox = await requeue_dead(session, app.outbox_tables, message_id)
        if outbox is None:
            raise HTTPException(status_code=404, detail="no dead outbox message with that id")
        await record_action(
            session, actor=actor, action="outbox.requeue", target=str(message_id), detail=outbox
        )
    return Requeued(message_id=message_id, outbox=outbox)
