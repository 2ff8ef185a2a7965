"""The test kit's ``saga_stack`` fixture, on the built-in order application: the real
relay, orchestrator and workers in a database and namespace of the fixture's own."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from sagaway.services.inventory.tables import stock
from sagaway.testing import SagaStack


def order(customer_id: str, total_cents: int) -> dict[str, Any]:
    return {
        "order_id": str(uuid.uuid4()),
        "customer_id": customer_id,
        "items": [{"sku": "SKU-1", "quantity": 3}],
        "total_cents": total_cents,
        "currency": "EUR",
    }


async def reserved(stack: SagaStack, sku: str) -> int:
    async with stack.sessions() as session:
        value = await session.scalar(select(stock.c.reserved).where(stock.c.sku == sku))
    return int(value or 0)


async def test_an_order_saga_completes_end_to_end(saga_stack: SagaStack) -> None:
    assert saga_stack.settings.namespace.startswith("test-")
    await saga_stack.seed()
    saga_id = await saga_stack.start("order_fulfillment", order("c-1", 1500))

    saga = await saga_stack.wait(saga_id)

    assert saga["status"] == "COMPLETED", saga
    assert set(saga["steps"].values()) == {"SUCCEEDED"}
    assert await reserved(saga_stack, "SKU-1") == 3


async def test_a_rejected_payment_compensates_end_to_end(saga_stack: SagaStack) -> None:
    await saga_stack.seed()
    saga_id = await saga_stack.start("order_fulfillment", order("c-poor", 50_000))

    saga = await saga_stack.wait(saga_id)

    assert saga["status"] == "COMPENSATED", saga
    assert saga["failure_reason"] == "insufficient_funds"
    assert saga["steps"]["reserve_inventory"] == "COMPENSATED"
    assert await reserved(saga_stack, "SKU-1") == 0
