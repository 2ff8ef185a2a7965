"""The outbox relay on the real PostgreSQL and RabbitMQ.

Rows go to the orchestrator's outbox table (``sagas.outbox``); the relay drains the
whole table, so every test writes rows of its own sagas and asserts only on those.
Each test publishes to an exchange and queue of its own, named under the run's
namespace and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.orchestrator.tables import outbox
from sagaway.outbox.amqp import connect
from sagaway.outbox.deferred import flush_deferred
from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.errors import BrokerUnavailable
from sagaway.outbox.publisher import AioPikaPublisher, Publisher, PublishResult, RawMessage
from sagaway.outbox.relay import Relay, RelayOptions
from sagaway.outbox.settings import Settings
from sagaway.outbox.writer import OutboxWriter
from tests.support import wait_for

ROUTING_KEY = "relay-test"
UNREACHABLE_AMQP_URL = "amqp://guest:guest@127.0.0.1:1/"

writer = OutboxWriter(outbox)


@dataclass(frozen=True, slots=True)
class Target:
    """A test exchange with one queue bound by ``ROUTING_KEY``."""

    exchange: str
    queue: AbstractQueue


@pytest.fixture
async def channel(broker: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    """A channel of the test's own, closed afterwards."""
    channel = await broker.channel()
    yield channel
    await channel.close()


@pytest.fixture
async def target(
    settings: Settings, channel: AbstractChannel, db: AsyncEngine
) -> AsyncIterator[Target]:
    """An exchange and queue of this test, deleted afterwards with any row aimed at them."""
    name = f"{settings.namespace}.relay-test-{uuid.uuid4().hex[:8]}"
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, durable=False)
    queue = await channel.declare_queue(name, durable=False)
    await queue.bind(exchange, routing_key=ROUTING_KEY)
    yield Target(exchange=name, queue=queue)
    # A row left for a deleted exchange would make every later drain fail: remove it.
    async with db.begin() as conn:
        await conn.execute(delete(outbox).where(outbox.c.exchange == name))
    await channel.queue_delete(name)
    await channel.exchange_delete(name)


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[AioPikaPublisher]:
    """A real publisher on a connection of its own, closed afterwards."""
    connection = await connect(settings.amqp_url, name="relay-test")
    yield AioPikaPublisher(connection, timeout_s=settings.publish_timeout_s)
    await connection.close()


def relay(db: AsyncEngine, publisher: Publisher, *, batch_size: int = 200) -> Relay:
    return Relay(
        engine=db,
        tables=[outbox],
        publisher=publisher,
        options=RelayOptions(batch_size=batch_size),
    )


def message(
    target: Target,
    *,
    saga_id: uuid.UUID | None = None,
    seq: int = 0,
    routing_key: str = ROUTING_KEY,
) -> OutgoingMessage:
    envelope = Envelope(
        message_type="RelayTestCommand",
        saga_id=saga_id or uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        payload={"seq": seq},
    )
    return OutgoingMessage(envelope=envelope, exchange=target.exchange, routing_key=routing_key)


async def write(sessions: async_sessionmaker[AsyncSession], *messages: OutgoingMessage) -> None:
    """Commit ``messages`` in one transaction, one insert each so ids follow the order."""
    async with sessions() as session, session.begin():
        for m in messages:
            await writer.add(session, m)


async def rows(db: AsyncEngine, messages: Sequence[OutgoingMessage]) -> dict[uuid.UUID, Any]:
    """The outbox rows of ``messages`` by message id."""
    ids = [m.envelope.message_id for m in messages]
    async with db.connect() as conn:
        result = await conn.execute(
            select(
                outbox.c.id,
                outbox.c.message_id,
                outbox.c.published_at,
                outbox.c.attempts,
                outbox.c.last_error,
            ).where(outbox.c.message_id.in_(ids))
        )
        return {r.message_id: r for r in result}


async def drain_until_published(
    relay: Relay, db: AsyncEngine, messages: Sequence[OutgoingMessage]
) -> None:
    """Run relay passes until every one of ``messages`` is marked published."""

    async def unpublished() -> int:
        await relay.drain_once()
        found = await rows(db, messages)
        return sum(1 for r in found.values() if r.published_at is None)

    await wait_for(unpublished, until=lambda n: n == 0, what="messages published")


async def take(queue: AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
    """Exactly ``count`` messages from ``queue`` (fails if more or fewer arrive)."""
    got: list[AbstractIncomingMessage] = []

    async def fetch() -> int:
        while (m := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(m)
        return len(got)

    await wait_for(fetch, until=lambda n: n >= count, what=f"{count} messages in {queue.name}")
    assert await queue.get(no_ack=True, fail=False) is None, "more messages than expected"
    assert len(got) == count
    return got


def _envelope(m: AbstractIncomingMessage) -> Envelope:
    return Envelope.from_bytes(m.body)


class DownBrokerPublisher:
    """A publisher pointed at a broker nobody listens on: it connects on every publish."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.attempts = 0

    async def publish_batch(self, messages: Sequence[RawMessage]) -> list[PublishResult]:
        self.attempts += 1
        connection = await connect(self._url, name="relay-test-down")
        try:
            return await AioPikaPublisher(connection, timeout_s=1).publish_batch(messages)
        finally:
            await connection.close()


async def test_a_rolled_back_message_is_never_published(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    publisher: AioPikaPublisher,
    target: Target,
) -> None:
    rolled_back = message(target)
    async with sessions() as session, session.begin():
        await writer.add(session, rolled_back)
        await session.rollback()
    marker = message(target)
    await write(sessions, marker)

    await drain_until_published(relay(db, publisher), db, [marker])

    assert await rows(db, [rolled_back]) == {}
    [received] = await take(target.queue, 1)
    assert received.message_id == str(marker.envelope.message_id)


async def test_a_row_stays_unpublished_while_the_broker_is_down_then_is_delivered(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    publisher: AioPikaPublisher,
    target: Target,
) -> None:
    written = message(target)
    await write(sessions, written)
    down = DownBrokerPublisher(UNREACHABLE_AMQP_URL)
    down_relay = relay(db, down)

    for _ in range(3):
        with pytest.raises(BrokerUnavailable):
            await down_relay.drain_once()

    assert down.attempts >= 3
    row = (await rows(db, [written]))[written.envelope.message_id]
    assert row.published_at is None
    assert row.attempts == 0  # the link was down: nothing counts against the message

    await drain_until_published(relay(db, publisher), db, [written])

    [received] = await take(target.queue, 1)
    envelope = written.envelope
    assert received.body == envelope.to_bytes()
    assert received.message_id == str(envelope.message_id)
    assert received.correlation_id == str(envelope.correlation_id)
    assert received.type == "RelayTestCommand"
    assert received.content_type == "application/json"
    assert received.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert received.exchange == target.exchange
    assert received.routing_key == ROUTING_KEY
    row = (await rows(db, [written]))[envelope.message_id]
    assert row.published_at is not None
    assert row.attempts == 1


async def test_a_publisher_on_a_lost_connection_reports_the_broker_unavailable(
    settings: Settings,
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    target: Target,
) -> None:
    written = message(target)
    await write(sessions, written)
    connection = await connect(settings.amqp_url, name="relay-test-lost")
    await connection.close()
    lost = relay(db, AioPikaPublisher(connection, timeout_s=settings.publish_timeout_s))

    try:
        with pytest.raises(BrokerUnavailable):
            await lost.drain_once()
    finally:
        row = (await rows(db, [written]))[written.envelope.message_id]
        assert row.published_at is None


async def test_an_unroutable_message_backs_off_then_is_parked_dead_blocking_only_its_saga(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    publisher: AioPikaPublisher,
    target: Target,
) -> None:
    stuck_saga = uuid.uuid4()
    unroutable = message(target, saga_id=stuck_saga, routing_key="routes-nowhere")
    behind_it = message(target, saga_id=stuck_saga, seq=1)
    other_saga = message(target)
    await write(sessions, unroutable, behind_it, other_saga)
    the_relay = Relay(
        engine=db,
        tables=[outbox],
        publisher=publisher,
        options=RelayOptions(batch_size=200, max_attempts=3, retry_backoff_s=60),
    )

    await drain_until_published(the_relay, db, [other_saga])
    await the_relay.drain_once()

    found = await rows(db, [unroutable, behind_it, other_saga])
    failed = found[unroutable.envelope.message_id]
    assert failed.published_at is None
    # Backed off: a pass right after the failure does not try it again.
    assert failed.attempts == 1
    assert failed.last_error is not None and "NO_ROUTE" in failed.last_error
    # The saga's next message waits behind the stuck one: a saga's order is kept.
    waiting = found[behind_it.envelope.message_id]
    assert (waiting.published_at, waiting.attempts) == (None, 0)
    assert found[other_saga.envelope.message_id].attempts == 1
    [received] = await take(target.queue, 1)
    assert received.message_id == str(other_saga.envelope.message_id)

    # Past its backoff it is tried again; after max_attempts it is parked as dead.
    for attempt in (2, 3):
        await _due_now(db, unroutable)
        await the_relay.drain_once()
        row = (await rows(db, [unroutable]))[unroutable.envelope.message_id]
        assert row.attempts == attempt
    async with db.connect() as conn:
        dead_at, published_at = (
            await conn.execute(
                select(outbox.c.dead_at, outbox.c.published_at).where(
                    outbox.c.message_id == unroutable.envelope.message_id
                )
            )
        ).one()
    assert dead_at is not None and published_at is None
    await _due_now(db, unroutable)
    await the_relay.drain_once()
    assert (await rows(db, [unroutable]))[unroutable.envelope.message_id].attempts == 3
    # Still blocking only its own saga.
    assert (await rows(db, [behind_it]))[behind_it.envelope.message_id].published_at is None


async def _due_now(db: AsyncEngine, written: OutgoingMessage) -> None:
    """Pretend the row's backoff has passed."""
    async with db.begin() as conn:
        await conn.execute(
            update(outbox)
            .where(outbox.c.message_id == written.envelope.message_id)
            .values(next_attempt_at=func.now())
        )


async def test_a_lower_id_committed_later_is_still_published(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    publisher: AioPikaPublisher,
    target: Target,
) -> None:
    early, late = message(target), message(target)
    the_relay = relay(db, publisher)

    async with sessions() as t1:
        await t1.begin()
        await writer.add(t1, early)
        await flush_deferred(t1)  # takes the lower id now, commits last
        await write(sessions, late)
        await drain_until_published(the_relay, db, [late])
        await t1.commit()

    await drain_until_published(the_relay, db, [early])

    found = await rows(db, [early, late])
    assert found[early.envelope.message_id].id < found[late.envelope.message_id].id
    received = await take(target.queue, 2)
    assert [m.message_id for m in received] == [
        str(late.envelope.message_id),
        str(early.envelope.message_id),
    ]


async def test_two_relays_publish_each_row_once_and_keep_each_sagas_order(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    target: Target,
) -> None:
    sagas = [uuid.uuid4() for _ in range(30)]
    # Sagas interleaved, so one batch holds many sagas and each saga spans many batches.
    written = [message(target, saga_id=s, seq=seq) for seq in range(10) for s in sagas]
    await write(sessions, *written)
    published_by: dict[str, int] = defaultdict(int)

    async def relay_loop(name: str) -> None:
        connection = await connect(settings.amqp_url, name=f"relay-test-{name}")
        try:
            # Small batches so both relays hold claims at the same time.
            the_relay = relay(db, AioPikaPublisher(connection, timeout_s=10), batch_size=10)

            async def unpublished() -> int:
                published_by[name] += await the_relay.drain_once()
                found = await rows(db, written)
                return sum(1 for r in found.values() if r.published_at is None)

            await wait_for(
                unpublished, until=lambda n: n == 0, interval=0.001, within=60, what="drained"
            )
        finally:
            await connection.close()

    await asyncio.gather(relay_loop("a"), relay_loop("b"))

    found = await rows(db, written)
    assert len(found) == 300
    assert all(r.published_at is not None for r in found.values())
    assert all(r.attempts == 1 for r in found.values()), "a row was marked twice"
    assert published_by["a"] > 0 and published_by["b"] > 0, published_by
    received = [_envelope(m) for m in await take(target.queue, 300)]
    assert len({e.message_id for e in received}) == 300
    order: dict[uuid.UUID, list[int]] = defaultdict(list)
    for e in received:
        order[e.saga_id].append(e.payload["seq"])
    assert order == {s: list(range(10)) for s in sagas}
