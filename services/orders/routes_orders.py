"""``POST /orders`` and ``GET /orders/{order_id}``."""

from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, HTTPException, Response
from sqlalchemy import select

from sagaway.services.api.dependencies import (
    CoordinatorDep,
    OneStatementSessionDep,
    ReadSessionsDep,
)
from sagaway.services.api.responses import BODY_ERRORS, UNAVAILABLE, invalid, not_a_uuid, problem
from sagaway.services.api.schemas import OrderAccepted, OrderRequest, OrderView
from sagaway.services.orders.placing import IdempotencyKeyReused, place_order
from sagaway.services.orders.tables import orders

log = structlog.get_logger(__name__)
router = APIRouter(tags=["orders"], responses={503: UNAVAILABLE})


@router.post(
    "/orders",
    status_code=202,
    response_model=OrderAccepted,
    responses={
        202: {
            "headers": {
                "Location": {"description": "`/sagas/{saga_id}`", "schema": {"type": "string"}}
            }
        },
        409: problem(
            "Idempotency key reused with a different body",
            "Idempotency-Key was already used with a different body",
        ),
        **BODY_ERRORS,
        422: invalid("Invalid order (unknown fields too)"),
        503: problem("PostgreSQL unavailable; nothing was written", "database unavailable"),
    },
)
async def create_order(
    body: OrderRequest,
    response: Response,
    session: OneStatementSessionDep,
    coordinator: CoordinatorDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)
    ] = None,
    correlation: Annotated[str | None, Header(alias="X-Correlation-ID")] = None,
) -> OrderAccepted:
    """Accept an order: the order, its saga and the first command commit together."""
    correlation_id = _correlation_id(correlation)
    structlog.contextvars.bind_contextvars(correlation_id=str(correlation_id))
    try:
        async with session.begin():
            placed = await place_order(
                session,
                coordinator,
                body,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
            )
    except IdempotencyKeyReused as exc:
        raise HTTPException(
            status_code=409, detail="Idempotency-Key was already used with a different body"
        ) from exc
    structlog.contextvars.bind_contextvars(saga_id=str(placed.saga_id))
    log.info(
        "order accepted" if not placed.replayed else "order replayed for idempotency key",
        order_id=str(placed.order_id),
        total_cents=body.total_cents,
    )
    response.headers["Location"] = f"/sagas/{placed.saga_id}"
    return OrderAccepted(order_id=placed.order_id, saga_id=placed.saga_id)


@router.get(
    "/orders/{order_id}",
    response_model=OrderView,
    responses={404: problem("Unknown order", "order not found"), 422: not_a_uuid("order_id")},
)
async def get_order(order_id: uuid.UUID, sessions: ReadSessionsDep) -> OrderView:
    """The order and where it stands."""
    async with sessions() as session:
        row = (await session.execute(select(orders).where(orders.c.id == order_id))).first()
    if row is None:
        raise HTTPException(status_code=404, detail="order not found")
    return OrderView(
        order_id=row.id,
        saga_id=row.saga_id,
        customer_id=row.customer_id,
        items=row.items,
        total_cents=row.total_cents,
        currency=row.currency,
        status=row.status,
        rejection_reason=row.rejection_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _correlation_id(header: str | None) -> uuid.UUID:
    if header:
        try:
            return uuid.UUID(header)
        except ValueError:
            pass
    return uuid.uuid4()
