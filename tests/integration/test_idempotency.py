"""Placing an order: one transaction, and one order per Idempotency-Key under a race."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.coordinator import SagaCoordinator
from sagaway.orchestrator.tables import outbox, sagas
from sagaway.outbox.deferred import flush_deferred
from sagaway.outbox.envelope import Envelope
from sagaway.outbox.settings import Settings
from sagaway.services.api.schemas import OrderItem, OrderRequest
from sagaway.services.orders.placing import IdempotencyKeyReused, PlacedOrder, place_order
from sagaway.services.orders.tables import idempotency_keys, orders
from sagaway.wiring import build_coordinator


@pytest.fixture(scope="module")
def coordinator(settings: Settings) -> SagaCoordinator:
    return build_coordinator(settings)


def order_request(customer_id: str, *, quantity: int = 2) -> OrderRequest:
    return OrderRequest(
        customer_id=customer_id,
        items=[OrderItem(sku="SKU-1", quantity=quantity, unit_price_cents=1500)],
    )


async def place(
    sessions: async_sessionmaker[AsyncSession],
    coordinator: SagaCoordinator,
    request: OrderRequest,
    *,
    key: str | None,
) -> PlacedOrder:
    """One request: its own session and transaction, committed as the API does."""
    async with sessions() as session, session.begin():
        return await place_order(
            session, coordinator, request, idempotency_key=key, correlation_id=uuid.uuid4()
        )


async def count_orders(session: AsyncSession, customer_id: str) -> int:
    query = select(func.count()).select_from(orders).where(orders.c.customer_id == customer_id)
    return int(await session.scalar(query) or 0)


async def count_sagas(session: AsyncSession, customer_id: str) -> int:
    order_ids = select(orders.c.id).where(orders.c.customer_id == customer_id)
    query = select(func.count()).select_from(sagas).where(sagas.c.order_id.in_(order_ids))
    return int(await session.scalar(query) or 0)


async def commands_of(session: AsyncSession, saga_id: uuid.UUID) -> list[Envelope]:
    bodies = (
        await session.execute(
            select(outbox.c.body).where(outbox.c.saga_id == saga_id).order_by(outbox.c.id)
        )
    ).scalars()
    return [Envelope.from_bytes(bytes(b)) for b in bodies]


async def test_concurrent_requests_with_one_key_place_one_order(
    sessions: async_sessionmaker[AsyncSession], coordinator: SagaCoordinator
) -> None:
    customer = f"c-{uuid.uuid4().hex[:12]}"
    key = f"key-{uuid.uuid4()}"
    request = order_request(customer)

    placed = await asyncio.gather(
        *(place(sessions, coordinator, request, key=key) for _ in range(10))
    )

    assert len({(p.order_id, p.saga_id) for p in placed}) == 1
    assert sorted(p.replayed for p in placed) == [False] + [True] * 9
    order_id, saga_id = placed[0].order_id, placed[0].saga_id
    async with sessions() as session:
        assert await count_orders(session, customer) == 1
        assert await count_sagas(session, customer) == 1
        order = (await session.execute(select(orders).where(orders.c.id == order_id))).one()
        assert order.saga_id == saga_id
        saga = (await session.execute(select(sagas).where(sagas.c.id == saga_id))).one()
        assert saga.order_id == order_id
        [command] = await commands_of(session, saga_id)
        assert command.message_type == "ReserveInventory"
        assert command.payload["order_id"] == str(order_id)
        keys = await session.scalar(
            select(func.count()).select_from(idempotency_keys).where(idempotency_keys.c.key == key)
        )
        assert keys == 1


async def test_the_same_key_with_another_body_is_refused(
    sessions: async_sessionmaker[AsyncSession], coordinator: SagaCoordinator
) -> None:
    customer = f"c-{uuid.uuid4().hex[:12]}"
    key = f"key-{uuid.uuid4()}"
    first = await place(sessions, coordinator, order_request(customer), key=key)

    with pytest.raises(IdempotencyKeyReused):
        await place(sessions, coordinator, order_request(customer, quantity=3), key=key)

    again = await place(sessions, coordinator, order_request(customer), key=key)
    assert (again.order_id, again.saga_id, again.replayed) == (first.order_id, first.saga_id, True)
    async with sessions() as session:
        assert await count_orders(session, customer) == 1
        assert await count_sagas(session, customer) == 1


async def test_order_saga_and_first_command_share_one_transaction(
    sessions: async_sessionmaker[AsyncSession], coordinator: SagaCoordinator
) -> None:
    customer = f"c-{uuid.uuid4().hex[:12]}"
    key = f"key-{uuid.uuid4()}"

    async with sessions() as session:
        await session.begin()
        placed = await place_order(
            session,
            coordinator,
            order_request(customer),
            idempotency_key=key,
            correlation_id=uuid.uuid4(),
        )
        # All three are written, in this transaction and nowhere else yet (the
        # outbox row goes with the commit; flushed here to look at it before)...
        await flush_deferred(session)
        assert await count_orders(session, customer) == 1
        assert await count_sagas(session, customer) == 1
        assert [c.message_type for c in await commands_of(session, placed.saga_id)] == [
            "ReserveInventory"
        ]
        async with sessions() as outsider:
            assert await count_orders(outsider, customer) == 0
            assert await commands_of(outsider, placed.saga_id) == []
        await session.rollback()

    # ...so a rollback leaves none of them (nor the idempotency key).
    async with sessions() as session:
        assert await count_orders(session, customer) == 0
        assert await count_sagas(session, customer) == 0
        saga = await session.scalar(select(sagas.c.id).where(sagas.c.id == placed.saga_id))
        assert saga is None
        assert await commands_of(session, placed.saga_id) == []
        assert (
            await session.scalar(
                select(idempotency_keys.c.key).where(idempotency_keys.c.key == key)
            )
            is None
        )
