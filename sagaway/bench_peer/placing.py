"""What the peer's HTTP handlers write: orders (with idempotency keys), stock and credit."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.bench_peer.rules import OrderData, OrderLine
from sagaway.bench_peer.tables import customers, orders, stock
from sagaway.services.api.schemas import OrderRequest


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """The order as its saga gets it; ``replayed`` when an idempotency key matched."""

    order: OrderData
    replayed: bool = False


class IdempotencyKeyReused(Exception):
    """The idempotency key was first used with a different body."""


async def place_order(
    session: AsyncSession, request: OrderRequest, *, idempotency_key: str | None
) -> PlacedOrder:
    """Insert a PENDING order, or find the one an idempotency key already placed.

    A concurrent request with the same key waits on the key's unique index until this
    transaction ends, then finds the row: one key, one order. The caller commits.
    """
    fingerprint = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
    order_id = uuid.uuid4()
    inserted = (
        await session.execute(
            insert(orders)
            .values(
                id=order_id,
                customer_id=request.customer_id,
                items=[item.model_dump() for item in request.items],
                total_cents=request.total_cents,
                currency=request.currency,
                status="PENDING",
                idempotency_key=idempotency_key,
                request_hash=fingerprint if idempotency_key is not None else None,
            )
            .on_conflict_do_nothing(index_elements=[orders.c.idempotency_key])
            .returning(orders.c.id)
        )
    ).first()
    if inserted is not None:
        return PlacedOrder(order_data(order_id, request.customer_id, request.items))
    first = (
        await session.execute(select(orders).where(orders.c.idempotency_key == idempotency_key))
    ).one()
    if first.request_hash != fingerprint:
        raise IdempotencyKeyReused(idempotency_key)
    return PlacedOrder(order_data(first.id, first.customer_id, first.items), replayed=True)


async def set_available(session: AsyncSession, sku: str, available: int) -> dict[str, Any]:
    """Set the units free to reserve; reservations are kept, the stocked total follows."""
    row = (
        await session.execute(
            insert(stock)
            .values(sku=sku, available=available, reserved=0, stocked=available)
            .on_conflict_do_update(
                index_elements=[stock.c.sku],
                set_={"available": available, "stocked": available + stock.c.reserved},
            )
            .returning(stock.c.sku, stock.c.available, stock.c.reserved)
        )
    ).one()
    return {"sku": row.sku, "available": row.available, "reserved": row.reserved}


async def set_credit_limit(
    session: AsyncSession, customer_id: str, credit_limit_cents: int
) -> dict[str, Any]:
    """Set a customer's credit limit; what is authorized stays as it is."""
    row = (
        await session.execute(
            insert(customers)
            .values(
                customer_id=customer_id,
                credit_limit_cents=credit_limit_cents,
                authorized_cents=0,
            )
            .on_conflict_do_update(
                index_elements=[customers.c.customer_id],
                set_={"credit_limit_cents": credit_limit_cents},
            )
            .returning(
                customers.c.customer_id,
                customers.c.credit_limit_cents,
                customers.c.authorized_cents,
            )
        )
    ).one()
    return {
        "customer_id": row.customer_id,
        "credit_limit_cents": row.credit_limit_cents,
        "authorized_cents": row.authorized_cents,
    }


def order_data(order_id: uuid.UUID, customer_id: str, items: Any) -> OrderData:
    """The saga's input from an order's id, customer and lines (models or JSON rows)."""
    lines = tuple(
        OrderLine(sku=i["sku"], quantity=i["quantity"], unit_price_cents=i["unit_price_cents"])
        if isinstance(i, dict)
        else OrderLine(sku=i.sku, quantity=i.quantity, unit_price_cents=i.unit_price_cents)
        for i in items
    )
    total = sum(line.quantity * line.unit_price_cents for line in lines)
    return OrderData(order_id=order_id, customer_id=customer_id, lines=lines, total_cents=total)
