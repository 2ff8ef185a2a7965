"""The test kit's ``saga_stack`` fixture, on the built-in order application: the real
relay, orchestrator and workers in a database and namespace of the fixture's own."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from sagaway.orchestrator.repository import SagaRepository
from sagaway.services.inventory.tables import stock
from sagaway.testing import SagaStack
from tests.support import wait_for


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


@pytest.fixture
def sagaway_stack_settings() -> dict[str, Any]:
    # Retries of an outage come back quickly, so the test waits on them, not on backoff.
    return {"step_backoff_s": 0.1, "step_backoff_cap_s": 0.2, "step_max_attempts": 50}


async def test_an_outage_switched_on_and_off_is_retried_through(saga_stack: SagaStack) -> None:
    await saga_stack.seed()
    await saga_stack.set_fault("payment", "unavailable")
    saga_id = await saga_stack.start("order_fulfillment", order("c-1", 1500))

    async def payment_attempts() -> int:
        async with saga_stack.sessions() as session:
            record = await SagaRepository().get(session, saga_id)
        assert record is not None
        return next(s.attempts for s in record.state.steps if s.name == "authorize_payment")

    await wait_for(payment_attempts, until=lambda n: n >= 2, within=20, what="a retry")
    await saga_stack.set_fault("payment", "ok")
    saga = await saga_stack.wait(saga_id)

    assert saga["status"] == "COMPLETED", saga
    assert await payment_attempts() >= 2
