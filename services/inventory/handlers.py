"""Inventory: reserve every line or none; release."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.claims import claim_for_saga, set_saga_status
from sagaway.orchestrator.participants import (
    CommandContext,
    Failed,
    Participant,
    Rejected,
    Reply,
    Succeeded,
)
from sagaway.services import contracts as c
from sagaway.services.inventory.tables import metadata, reservations, stock

RESERVED = "RESERVED"
REJECTED = "REJECTED"
RELEASED = "RELEASED"

inventory = Participant(
    "inventory", description="Reserves stock per SKU for an order.", metadata=metadata
)


@inventory.handles(
    c.ReserveInventory, replies=(c.InventoryReserved, c.InventoryReservationRejected)
)
async def reserve(session: AsyncSession, command: c.ReserveInventory, ctx: CommandContext) -> Reply:
    """Reserve every line of the order, or nothing (``out_of_stock``)."""
    wanted = Counter[str]()
    for line in command.items:
        wanted[line.sku] += line.quantity
    existing = await claim_for_saga(
        session,
        reservations,
        ctx.saga_id,
        {"order_id": command.order_id, "items": dict(wanted), "status": RESERVED},
    )
    if existing is not None:
        return _answer_for(existing["status"])
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
        await set_saga_status(session, reservations, ctx.saga_id, REJECTED)
        return Rejected(
            c.OUT_OF_STOCK,
            reply_type=c.INVENTORY_RESERVATION_REJECTED,
            detail={"skus": short},
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
    return Succeeded(reply_type=c.INVENTORY_RESERVED)


@inventory.handles(c.ReleaseInventory, replies=(c.InventoryReleased,))
async def release(session: AsyncSession, command: c.ReleaseInventory, ctx: CommandContext) -> Reply:
    """Give the saga's reserved units back; a no-op that leaves a tombstone otherwise."""
    existing = await claim_for_saga(
        session,
        reservations,
        ctx.saga_id,
        {"order_id": command.order_id, "items": {}, "status": RELEASED},
        lock=True,
    )
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
        await set_saga_status(session, reservations, ctx.saga_id, RELEASED)
    return Succeeded(reply_type=c.INVENTORY_RELEASED)


def _answer_for(status: str) -> Reply:
    if status == RESERVED:
        return Succeeded(reply_type=c.INVENTORY_RESERVED, detail={"reused": True})
    if status == REJECTED:
        return Rejected(c.OUT_OF_STOCK, reply_type=c.INVENTORY_RESERVATION_REJECTED)
    # Released already: this attempt arrived after the saga gave up on it.
    return Failed("reservation already released for this saga")
