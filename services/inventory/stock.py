"""Stock levels: what operators set and read."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.services.inventory.tables import stock


@dataclass(frozen=True, slots=True)
class StockLevel:
    """Free and reserved units of one SKU."""

    sku: str
    available: int
    reserved: int


async def set_available(session: AsyncSession, sku: str, available: int) -> StockLevel:
    """Set the units free to reserve; reservations are kept as they are."""
    row = (
        await session.execute(
            insert(stock)
            .values(sku=sku, available=available, reserved=0)
            .on_conflict_do_update(
                index_elements=[stock.c.sku],
                set_={"available": available, "updated_at": func.now()},
            )
            .returning(stock.c.sku, stock.c.available, stock.c.reserved)
        )
    ).one()
    return StockLevel(row.sku, row.available, row.reserved)


async def get_level(session: AsyncSession, sku: str) -> StockLevel | None:
    """The SKU's stock, or None when it was never stocked."""
    row = (
        await session.execute(
            select(stock.c.sku, stock.c.available, stock.c.reserved).where(stock.c.sku == sku)
        )
    ).first()
    return StockLevel(row.sku, row.available, row.reserved) if row else None
