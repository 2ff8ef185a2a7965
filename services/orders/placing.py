"""Placing an order: the order, its saga and the saga's first command in one transaction."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.coordinator import SagaCoordinator
from sagaway.outbox.deferred import defer_guard, defer_insert, flush_deferred, guard_won
from sagaway.services.api.schemas import OrderRequest
from sagaway.services.orders.saga import ORDER_FULFILLMENT
from sagaway.services.orders.tables import idempotency_keys, orders


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
    coordinator: SagaCoordinator,
    request: OrderRequest,
    *,
    idempotency_key: str | None,
    correlation_id: uuid.UUID,
) -> PlacedOrder:
    """Write the order, its saga and the first command; the caller commits.

    All of it goes to PostgreSQL as one statement (``outbox.deferred``), so in an
    autocommit session the request is one round trip and still all or nothing. With an
    idempotency key the key's insert leads that statement and the rest is written only
    if the key is new; otherwise the first answer is replayed (or, for another body,
    ``IdempotencyKeyReused``). A concurrent request with the same key blocks on the
    key's primary key until the first one committed, then finds it: one key, one order.
    """
    order_id, saga_id = uuid.uuid4(), uuid.uuid4()
    fingerprint = None
    if idempotency_key is not None:
        fingerprint = request_fingerprint(request)
        # The key decides, in the same statement, whether the order, its saga and its
        # first command are written: one round trip, and one key, one order.
        defer_guard(
            session,
            idempotency_keys,
            {
                "key": idempotency_key,
                "request_hash": fingerprint,
                "order_id": order_id,
                "saga_id": saga_id,
                "status_code": 202,
            },
            conflict=["key"],
        )

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
    await coordinator.start(
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
    if idempotency_key is None:
        return PlacedOrder(order_id, saga_id)
    # Sent now, to learn whether the key was new. A concurrent request with the same key
    # waits on the key's primary key until the first one committed, then finds it.
    await flush_deferred(session)
    if guard_won(session):
        return PlacedOrder(order_id, saga_id)
    first = (
        await session.execute(
            select(idempotency_keys).where(idempotency_keys.c.key == idempotency_key)
        )
    ).one()
    if first.request_hash != fingerprint:
        raise IdempotencyKeyReused(idempotency_key)
    return PlacedOrder(first.order_id, first.saga_id, replayed=True)
