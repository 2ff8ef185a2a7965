"""Placing an order: the order, its saga and the saga's first command in one transaction."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.definitions import ORDER_FULFILLMENT
from orchestrator.engine import SagaEngine
from outbox.deferred import defer_insert
from services.orders.schemas import OrderRequest
from services.orders.tables import idempotency_keys, orders


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """The ids the caller gets; ``replayed`` when an idempotency key matched."""

    order_id: uuid.UUID
    saga_id: uuid.UUID
    replayed: bool = False


class IdempotencyKeyReused(Exception):
    """The idempotency key was first used with a different body."""


def request_fingerprint(request: OrderRequest) -> str:
    """A hash of the validated body: equal bodies (after defaults) hash equal."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


async def place_order(
    session: AsyncSession,
    engine: SagaEngine,
    request: OrderRequest,
    *,
    idempotency_key: str | None,
    correlation_id: uuid.UUID,
) -> PlacedOrder:
    """Write the order, its saga and the first command; the caller commits.

    With an idempotency key the key row is inserted first. A concurrent request with
    the same key blocks on the key's primary key until this transaction ends, then
    finds the row and replays this answer: one key, one order.
    """
    order_id, saga_id = uuid.uuid4(), uuid.uuid4()
    if idempotency_key is not None:
        fingerprint = request_fingerprint(request)
        claimed = (
            await session.execute(
                pg_insert(idempotency_keys)
                .values(
                    key=idempotency_key,
                    request_hash=fingerprint,
                    order_id=order_id,
                    saga_id=saga_id,
                    status_code=202,
                )
                .on_conflict_do_nothing(index_elements=[idempotency_keys.c.key])
                .returning(idempotency_keys.c.key)
            )
        ).first()
        if claimed is None:
            first = (
                await session.execute(
                    select(idempotency_keys).where(idempotency_keys.c.key == idempotency_key)
                )
            ).one()
            if first.request_hash != fingerprint:
                raise IdempotencyKeyReused(idempotency_key)
            return PlacedOrder(first.order_id, first.saga_id, replayed=True)

    items = [i.model_dump() for i in request.items]
    total = request.total_cents
    # Sent at commit in one statement with the saga, its history and its first
    # command (see ``outbox.deferred``).
    defer_insert(
        session,
        orders,
        [
            {
                "id": order_id,
                "saga_id": saga_id,
                "customer_id": request.customer_id,
                "items": items,
                "total_cents": total,
                "currency": request.currency,
                "status": "PENDING",
            }
        ],
    )
    await engine.start(
        session,
        saga_type=ORDER_FULFILLMENT.name,
        saga_id=saga_id,
        order_id=order_id,
        correlation_id=correlation_id,
        data={
            "order_id": str(order_id),
            "customer_id": request.customer_id,
            "items": items,
            "total_cents": total,
            "currency": request.currency,
        },
    )
    return PlacedOrder(order_id, saga_id)
