"""A participant behind the shared consumer: each command has its effect once.

Commands are published to the run's real inventory queue and consumed by an
``outbox.consumer.Consumer`` running the inventory participant, as the worker does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
import aiormq
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.application import Names
from sagaway.outbox.amqp import Topology, message_count
from sagaway.outbox.consumer import Consumer, Handler
from sagaway.outbox.envelope import Envelope
from sagaway.outbox.inbox import Inbox
from sagaway.outbox.settings import Settings
from sagaway.services import contracts as c
from sagaway.services.inventory.stock import StockLevel, get_level, set_available
from sagaway.wiring import build_dispatcher
from tests.support import INBOX_TABLES, OUTBOX_TABLES, wait_for

PARTICIPANT = "inventory"
STOCK = 10
inbox_table = INBOX_TABLES[PARTICIPANT]
outbox_table = OUTBOX_TABLES[PARTICIPANT]


class ObservedConsumer(Consumer):
    """The real consumer, counting the deliveries it has finished with (acked or not)."""

    def __init__(
        self,
        *,
        queue: str,
        inbox: Inbox,
        handler: Handler,
        sessions: async_sessionmaker[AsyncSession],
        prefetch: int,
    ) -> None:
        super().__init__(
            queue=queue, inbox=inbox, handler=handler, sessions=sessions, prefetch=prefetch
        )
        self.finished = 0

    async def process_batch(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        await super().process_batch(messages)
        self.finished += len(messages)

    async def wait_finished(self, count: int) -> None:
        async def finished() -> int:
            return self.finished

        await wait_for(finished, until=lambda n: n >= count, what=f"{count} deliveries handled")


@dataclass(frozen=True, slots=True)
class Harness:
    """The inventory queue of this run and a channel to publish commands with."""

    names: Names
    connection: AbstractRobustConnection
    channel: AbstractChannel
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings

    @property
    def queue(self) -> str:
        return self.names.queue(PARTICIPANT)

    @property
    def dead_queue(self) -> str:
        return Topology.dead_letter_queue(self.queue)

    async def publish(self, body: bytes, *, message_id: str | None, message_type: str) -> None:
        exchange = await self.channel.get_exchange(self.names.commands_exchange)
        await exchange.publish(
            aio_pika.Message(
                body=body,
                message_id=message_id,
                type=message_type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=PARTICIPANT,
            mandatory=True,
        )

    async def send(self, envelope: Envelope) -> None:
        await self.publish(
            envelope.to_bytes(),
            message_id=str(envelope.message_id),
            message_type=envelope.message_type,
        )

    async def ready_count(self, queue: str) -> int:
        return await message_count(self.channel, queue)

    @asynccontextmanager
    async def consumer(self) -> AsyncIterator[ObservedConsumer]:
        """Run the inventory consumer, as ``sagaway worker inventory`` does, then stop it."""
        consumer = ObservedConsumer(
            queue=self.queue,
            inbox=Inbox(inbox_table, PARTICIPANT),
            handler=build_dispatcher(PARTICIPANT, self.settings).handle,
            sessions=self.sessions,
            prefetch=self.settings.consumer_prefetch,
        )
        stop = asyncio.Event()
        channel = await self.connection.channel()
        task = asyncio.create_task(consumer.run(channel, stop))
        try:
            yield consumer
        finally:
            stop.set()
            try:
                await task
            finally:
                # Closing the channel hands back anything unacknowledged to the queue.
                await channel.close()


@pytest.fixture
async def harness(
    broker: AbstractRobustConnection,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Harness]:
    """A publishing channel; the inventory queue and its dead letters start empty."""
    channel = await broker.channel()
    names = Names(settings.namespace)
    h = Harness(
        names=names, connection=broker, channel=channel, sessions=sessions, settings=settings
    )
    for queue in (h.queue, h.dead_queue):
        await (await channel.get_queue(queue)).purge()
    yield h
    await channel.close()


@pytest.fixture
async def sku(sessions: async_sessionmaker[AsyncSession]) -> str:
    """A SKU of this test with ``STOCK`` units free."""
    name = f"SKU-{uuid.uuid4().hex[:12]}"
    async with sessions() as session, session.begin():
        await set_available(session, name, STOCK)
    return name


def reserve(saga_id: uuid.UUID, order_id: uuid.UUID, sku: str, quantity: int) -> Envelope:
    return Envelope(
        message_type="ReserveInventory",
        saga_id=saga_id,
        correlation_id=saga_id,
        payload={"order_id": str(order_id), "items": [{"sku": sku, "quantity": quantity}]},
    )


def release(saga_id: uuid.UUID, order_id: uuid.UUID) -> Envelope:
    return Envelope(
        message_type="ReleaseInventory",
        saga_id=saga_id,
        correlation_id=saga_id,
        payload={"order_id": str(order_id)},
    )


async def level(sessions: async_sessionmaker[AsyncSession], sku: str) -> StockLevel:
    async with sessions() as session:
        found = await get_level(session, sku)
    assert found is not None
    return found


async def replies_to(
    sessions: async_sessionmaker[AsyncSession], command: Envelope
) -> list[Envelope]:
    """Reply envelopes in inventory's outbox caused by ``command``, in written order."""
    async with sessions() as session:
        bodies = (
            await session.execute(
                select(outbox_table.c.body)
                .where(outbox_table.c.saga_id == command.saga_id)
                .order_by(outbox_table.c.id)
            )
        ).scalars()
        replies = [Envelope.from_bytes(bytes(b)) for b in bodies]
    return [r for r in replies if r.causation_id == command.message_id]


async def inbox_rows(sessions: async_sessionmaker[AsyncSession], command: Envelope) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(inbox_table)
            .where(
                inbox_table.c.consumer == PARTICIPANT,
                inbox_table.c.message_id == command.message_id,
            )
        )
    return int(count or 0)


async def test_the_same_command_delivered_twice_applies_once(
    harness: Harness, sku: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    command = reserve(uuid.uuid4(), uuid.uuid4(), sku, 3)
    await harness.send(command)
    await harness.send(command)  # the same message_id: a duplicate delivery

    async with harness.consumer() as consumer:
        await consumer.wait_finished(2)
        assert await harness.ready_count(harness.queue) == 0

    assert consumer.finished == 2  # acknowledged: neither came back for another try
    assert await harness.ready_count(harness.queue) == 0
    assert await level(sessions, sku) == StockLevel(sku, STOCK - 3, 3)
    assert await inbox_rows(sessions, command) == 1
    [reply] = await replies_to(sessions, command)
    assert reply.message_type == c.INVENTORY_RESERVED
    assert reply.payload["outcome"] == "succeeded"
    assert reply.saga_id == command.saga_id
    assert reply.correlation_id == command.correlation_id


async def test_a_retry_attempt_reuses_the_first_reservation(
    harness: Harness, sku: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    saga_id, order_id = uuid.uuid4(), uuid.uuid4()
    first = reserve(saga_id, order_id, sku, 4)
    retry = reserve(saga_id, order_id, sku, 4)  # a new attempt: a new message id
    assert retry.message_id != first.message_id

    async with harness.consumer() as consumer:
        await harness.send(first)
        await consumer.wait_finished(1)
        await harness.send(retry)
        await consumer.wait_finished(2)

    assert await level(sessions, sku) == StockLevel(sku, STOCK - 4, 4)
    [first_reply] = await replies_to(sessions, first)
    [retry_reply] = await replies_to(sessions, retry)
    assert first_reply.message_type == c.INVENTORY_RESERVED
    assert retry_reply.message_type == c.INVENTORY_RESERVED
    assert retry_reply.payload["outcome"] == "succeeded"
    assert retry_reply.payload.get("reused") is True


async def test_a_reserve_arriving_after_the_release_does_not_reserve(
    harness: Harness, sku: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    saga_id, order_id = uuid.uuid4(), uuid.uuid4()
    compensation = release(saga_id, order_id)
    late_attempt = reserve(saga_id, order_id, sku, 2)

    async with harness.consumer() as consumer:
        await harness.send(compensation)
        await consumer.wait_finished(1)
        await harness.send(late_attempt)
        await consumer.wait_finished(2)

    assert await level(sessions, sku) == StockLevel(sku, STOCK, 0)
    [released] = await replies_to(sessions, compensation)
    assert released.message_type == c.INVENTORY_RELEASED
    [late] = await replies_to(sessions, late_attempt)
    assert late.message_type == c.COMMAND_FAILED
    assert late.payload["outcome"] == "failed"


async def test_a_reserve_after_reserve_and_release_does_not_reserve_again(
    harness: Harness, sku: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    saga_id, order_id = uuid.uuid4(), uuid.uuid4()
    first = reserve(saga_id, order_id, sku, 5)
    compensation = release(saga_id, order_id)
    late_attempt = reserve(saga_id, order_id, sku, 5)

    async with harness.consumer() as consumer:
        for count, command in enumerate((first, compensation, late_attempt), start=1):
            await harness.send(command)
            await consumer.wait_finished(count)

    assert await level(sessions, sku) == StockLevel(sku, STOCK, 0)
    [late] = await replies_to(sessions, late_attempt)
    assert late.message_type == c.COMMAND_FAILED
    assert late.payload["outcome"] == "failed"


async def test_an_unparseable_message_is_dead_lettered_and_the_consumer_goes_on(
    harness: Harness, sku: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    garbage = b"this is not an envelope {"
    good = reserve(uuid.uuid4(), uuid.uuid4(), sku, 1)

    async with harness.consumer() as consumer:
        await harness.publish(garbage, message_id=str(uuid.uuid4()), message_type="Garbage")
        await harness.send(good)
        await consumer.wait_finished(2)

    dead_queue = await harness.channel.get_queue(harness.dead_queue)

    async def dead_letter() -> AbstractIncomingMessage | None:
        return await dead_queue.get(no_ack=True, fail=False)

    dead = await wait_for(dead_letter, until=lambda m: m is not None, what="dead letter")
    assert dead is not None
    assert dead.body == garbage
    assert await dead_queue.get(no_ack=True, fail=False) is None
    assert await harness.ready_count(harness.queue) == 0
    assert await level(sessions, sku) == StockLevel(sku, STOCK - 1, 1)
    [reply] = await replies_to(sessions, good)
    assert reply.message_type == c.INVENTORY_RESERVED


@pytest.mark.parametrize("ack_fails_with", [None, "connection closed while writing"])
async def test_a_message_whose_channel_closed_before_the_ack_is_applied_once(
    harness: Harness,
    sku: str,
    sessions: async_sessionmaker[AsyncSession],
    ack_fails_with: str | None,
) -> None:
    # aiormq 7 refuses an ack on a closed channel at once (ChannelInvalidStateError);
    # an ack already being written when a node shuts down fails with ConnectionClosed
    # instead. Either way the commit stands, the consumer goes on, the broker
    # redelivers the message and the inbox drops it.
    command = reserve(uuid.uuid4(), uuid.uuid4(), sku, 2)
    await harness.send(command)
    consumer = Consumer(
        queue=harness.queue,
        inbox=Inbox(inbox_table, PARTICIPANT),
        handler=build_dispatcher(PARTICIPANT, harness.settings).handle,
        sessions=sessions,
        prefetch=1,
    )
    channel = await harness.connection.channel()
    queue = await channel.get_queue(harness.queue)
    delivery = await wait_for(
        lambda: queue.get(no_ack=False, fail=False),
        until=lambda m: m is not None,
        what="the command",
    )
    assert delivery is not None
    await channel.close()  # the broker requeues the unacknowledged delivery
    if ack_fails_with is not None:
        delivery = _AckCutShort(delivery, ack_fails_with)  # type: ignore[assignment]

    await consumer.process(delivery)

    assert await inbox_rows(sessions, command) == 1
    assert await level(sessions, sku) == StockLevel(sku, STOCK - 2, 2)
    async with harness.consumer() as redelivered:
        await redelivered.wait_finished(1)
    assert await harness.ready_count(harness.queue) == 0
    assert await inbox_rows(sessions, command) == 1
    assert await level(sessions, sku) == StockLevel(sku, STOCK - 2, 2)
    assert len(await replies_to(sessions, command)) == 1


class _AckCutShort:
    """A delivery whose acknowledgement fails as one being written when the connection
    closes under it (aiormq raises the connection's close from the write)."""

    def __init__(self, delivery: AbstractIncomingMessage, why: str) -> None:
        self._delivery = delivery
        self._why = why

    def __getattr__(self, name: str) -> object:
        return getattr(self._delivery, name)

    async def ack(self, multiple: bool = False) -> None:
        raise aiormq.exceptions.ConnectionClosed(320, f"CONNECTION_FORCED - {self._why}")
