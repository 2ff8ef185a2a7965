"""Inventory's command handlers: reserve every line or none; release."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.state import Outcome
from sagaway.outbox.envelope import Envelope
from sagaway.services import contracts as c
from sagaway.services.inventory.tables import reservations, stock
from sagaway.services.participant import Answer, Route

RESERVED = "RESERVED"
REJECTED = "REJECTED"
RELEASED = "RELEASED"


async def reserve(session: AsyncSession, envelope: Envelope, command: Any) -> Answer:
    """Reserve every line of the order, or nothing (``out_of_stock``)."""
    assert isinstance(command, c.ReserveInventory)
    wanted = Counter[str]()
    for line in command.items:
        wanted[line.sku] += line.quantity
    existing = await _claim(session, envelope, command.order_id, dict(wanted), RESERVED)
    if existing is not None:
        return _answer_for(existing)
    # Lock the SKUs in a fixed order so two orders for the same SKUs cannot deadlock.
    rows = (
        await session.execute(
            select(stock.c.sku, stock.c.available)
            .where(stock.c.sku.in_(sorted(wanted)))
            .order_by(stock.c.sku)
            .with_for_update()
        )
    ).all()
    available = {r.sku: r.available for r in rows}
    short = sorted(sku for sku, qty in wanted.items() if available.get(sku, 0) < qty)
    if short:
        await _set_status(session, envelope, REJECTED)
        return Answer(
            c.INVENTORY_RESERVATION_REJECTED, Outcome.REJECTED, c.OUT_OF_STOCK, {"skus": short}
        )
    for sku, qty in sorted(wanted.items()):
        await session.execute(
            update(stock)
            .where(stock.c.sku == sku)
            .values(
                available=stock.c.available - qty,
                reserved=stock.c.reserved + qty,
                updated_at=func.now(),
            )
        )
    return Answer(c.INVENTORY_RESERVED, Outcome.SUCCEEDED)


async def release(session: AsyncSession, envelope: Envelope, command: Any) -> Answer:
    """Give the saga's reserved units back; a no-op that leaves a tombstone otherwise."""
    assert isinstance(command, c.ReleaseInventory)
    existing = await _claim(session, envelope, command.order_id, {}, RELEASED, lock=True)
    if existing is not None and existing["status"] == RESERVED:
        for sku, qty in sorted(existing["items"].items()):
            await session.execute(
                update(stock)
                .where(stock.c.sku == sku)
                .values(
                    available=stock.c.available + qty,
                    reserved=stock.c.reserved - qty,
                    updated_at=func.now(),
                )
            )
        await _set_status(session, envelope, RELEASED)
    return Answer(c.INVENTORY_RELEASED, Outcome.SUCCEEDED)


async def _claim(
    session: AsyncSession,
    envelope: Envelope,
    order_id: Any,
    items: dict[str, int],
    status: str,
    *,
    lock: bool = False,
) -> dict[str, Any] | None:
    """Insert the saga's reservation row with ``status``; if it exists, return it.

    A concurrent attempt for the same saga waits on the primary key and then reads the
    winner's row, so the stock is touched once per saga whatever arrives twice.
    """
    inserted = (
        await session.execute(
            insert(reservations)
            .values(saga_id=envelope.saga_id, order_id=order_id, items=items, status=status)
            .on_conflict_do_nothing(index_elements=[reservations.c.saga_id])
            .returning(reservations.c.saga_id)
        )
    ).first()
    if inserted is not None:
        return None
    query = select(reservations.c.status, reservations.c["items"]).where(
        reservations.c.saga_id == envelope.saga_id
    )
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).one()
    return {"status": row.status, "items": row.items}


async def _set_status(session: AsyncSession, envelope: Envelope, status: str) -> None:
    await session.execute(
        update(reservations)
        .where(reservations.c.saga_id == envelope.saga_id)
        .values(status=status, updated_at=func.now())
    )


def _answer_for(existing: dict[str, Any]) -> Answer:
    if existing["status"] == RESERVED:
        return Answer(c.INVENTORY_RESERVED, Outcome.SUCCEEDED, detail={"reused": True})
    if existing["status"] == REJECTED:
        return Answer(c.INVENTORY_RESERVATION_REJECTED, Outcome.REJECTED, c.OUT_OF_STOCK)
    # Released already: this attempt arrived after the saga gave up on it.
    return Answer(c.COMMAND_FAILED, Outcome.FAILED, "reservation already released for this saga")


ROUTES = {
    "ReserveInventory": Route(c.ReserveInventory, reserve),
    "ReleaseInventory": Route(c.ReleaseInventory, release),
}
