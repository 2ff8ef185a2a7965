"""A message a handler keeps failing on is dead-lettered after a bounded number of
deliveries, on quorum queues (the broker counts) and classic queues (we count)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Literal

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orchestrator.tables import inbox as inbox_table
from outbox.amqp import QueueSpec, Topology, declare, message_count
from outbox.consumer import Consumer
from outbox.envelope import Envelope
from outbox.inbox import Inbox
from sagaway.settings import Settings
from tests.support import wait_for

LIMIT = 3


@pytest.fixture
async def topology(
    settings: Settings, broker: AbstractRobustConnection, request: pytest.FixtureRequest
) -> AsyncIterator[Topology]:
    """A throwaway exchange and queue of the requested type under the run's namespace."""
    queue_type: Literal["quorum", "classic"] = request.param
    prefix = f"{settings.namespace}.poison-{queue_type}-{uuid.uuid4().hex[:6]}"
    topo = Topology(
        exchanges=(f"{prefix}.x",),
        queues=(QueueSpec(name=f"{prefix}.q", exchange=f"{prefix}.x", routing_keys=("k",)),),
        dead_letter_exchange=f"{prefix}.dlx",
        queue_type=queue_type,
        delivery_limit=LIMIT + 10,  # the consumer's own limit must act first
    )
    channel = await broker.channel()
    await declare(channel, topo)
    yield topo
    for q in topo.queues:
        await channel.queue_delete(q.name)
        await channel.queue_delete(topo.dead_letter_queue(q.name))
    for x in (*topo.exchanges, topo.dead_letter_exchange):
        await channel.exchange_delete(x)
    await channel.close()


@pytest.mark.parametrize("topology", ["quorum", "classic"], indirect=True)
async def test_a_message_that_keeps_failing_is_dead_lettered_after_the_limit(
    topology: Topology,
    broker: AbstractRobustConnection,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    attempts: list[uuid.UUID] = []

    async def always_fails(session: AsyncSession, envelope: Envelope) -> None:
        attempts.append(envelope.message_id)
        raise RuntimeError("handler bug")

    queue = topology.queues[0].name
    consumer = Consumer(
        queue=queue,
        inbox=Inbox(inbox_table, f"poison-test-{uuid.uuid4().hex[:6]}"),
        handler=always_fails,
        sessions=sessions,
        prefetch=1,
        delivery_limit=LIMIT,
    )
    poison = Envelope(message_type="Poison", saga_id=uuid.uuid4(), correlation_id=uuid.uuid4())
    channel = await broker.channel()
    exchange = await channel.get_exchange(topology.exchanges[0])
    await exchange.publish(aio_pika.Message(body=poison.to_bytes()), routing_key="k")

    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(await broker.channel(), stop))
    try:
        dead = await channel.get_queue(topology.dead_letter_queue(queue))

        async def dead_count() -> int:
            return await message_count(channel, dead.name)

        await wait_for(dead_count, until=lambda n: n == 1, what="poison message dead-lettered")
    finally:
        stop.set()
        await running
    assert attempts == [poison.message_id] * LIMIT
    letter = await dead.get(no_ack=True)
    assert letter is not None
    assert Envelope.from_bytes(letter.body).message_id == poison.message_id
    deaths = (letter.headers or {}).get("x-death")
    assert isinstance(deaths, list) and deaths[0]["reason"] == "rejected"
    await channel.close()
