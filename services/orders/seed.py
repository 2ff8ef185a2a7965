"""The order application's demo data: stock and customers, added only where missing."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from sagaway.services.inventory.tables import stock
from sagaway.services.payment.tables import customers

DEMO_STOCK = {f"SKU-{n}": 1000 for n in range(1, 6)}
DEMO_CUSTOMERS = {"c-1": 100_000, "c-2": 100_000, "c-42": 100_000, "c-poor": 1_000}


async def seed_demo(conn: AsyncConnection) -> str:
    """Insert demo SKUs (SKU-1..SKU-5, 1000 each) and customers that do not exist yet.

    Existing rows are left alone, so seeding again never rewrites stock that orders
    have already reserved.
    """
    skus = await conn.execute(
        insert(stock)
        .values([{"sku": s, "available": n, "reserved": 0} for s, n in DEMO_STOCK.items()])
        .on_conflict_do_nothing(index_elements=[stock.c.sku])
    )
    custs = await conn.execute(
        insert(customers)
        .values(
            [
                {"customer_id": c, "credit_limit_cents": limit, "authorized_cents": 0}
                for c, limit in DEMO_CUSTOMERS.items()
            ]
        )
        .on_conflict_do_nothing(index_elements=[customers.c.customer_id])
    )
    return f"seeded {skus.rowcount} SKUs and {custs.rowcount} customers"
