"""A consumer applies what has arrived as one batch, and still once per message.

Each test consumes a quorum queue of its own under the run's namespace, records its
inbox rows in the orchestrator's inbox under a consumer name of its own, and runs a
handler that writes one outbox row per message it applies (deferred to the commit, as
every handler's rows are), aimed at an exchange named for the test: those rows say
which message took effect and how many times. They are deleted afterwards, so no relay
of a later test tries to publish them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import delete, event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.tables import inbox as inbox_table
from orchestrator.tables import outbox
from outbox.amqp import QueueSpec, Topology, declare, message_count
from outbox.consumer import Consumer
from outbox.envelope import Envelope, OutgoingMessage
from outbox.inbox import Inbox
from outbox.writer import OutboxWriter
from sagaway.database import create_engine, session_factory
from sagaway.settings import Settings
from tests.support import wait_for

LIMIT = 3
POISON = "Poison"
KILL_CONNECTION = "KillConnection"
writer = OutboxWriter(outbox)


@dataclass
class Recorder:
    """The handler and ``prepare`` hook under test: what they were called with, and one
    outbox row per message applied (the effect, counted after commit)."""

    exchange: str
    calls: list[uuid.UUID] = field(default_factory=list)
    batches: list[list[uuid.UUID]] = field(default_factory=list)
    # Applied messages the poison saw committed, each time it was handled.
    poison_saw: list[int] = field(default_factory=list)
    killed: bool = False

    async def prepare(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        self.batches.append([e.message_id for e in envelopes])

    async def handle(self, session: AsyncSession, envelope: Envelope) -> None:
        self.calls.append(envelope.message_id)
        if envelope.message_type == POISON:
            self.poison_saw.append(await _effect_count(session, self.exchange))
            raise RuntimeError("handler bug")
        if envelope.message_type == KILL_CONNECTION and not self.killed:
            # A real connection loss in the middle of the batch (the server ends the
            # backend, as a restart or failover would), once.
            self.killed = True
            await session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        effect = Envelope(
            message_type="Applied",
            saga_id=envelope.saga_id,
            correlation_id=envelope.correlation_id,
            causation_id=envelope.message_id,
        )
        await writer.add(
            session, OutgoingMessage(envelope=effect, exchange=self.exchange, routing_key="none")
        )


async def _effect_count(session: AsyncSession, exchange: str) -> int:
    query = select(func.count()).select_from(outbox).where(outbox.c.exchange == exchange)
    return int(await session.scalar(query) or 0)


@dataclass
class Lane:
    """A queue of the test's own, a consumer over it, and ways to look at the outcome."""

    queue: str
    exchange: str
    consumer_name: str
    channel: AbstractChannel
    connection: AbstractRobustConnection
    sessions: async_sessionmaker[AsyncSession]
    recorder: Recorder
    # Commits on the consumer's own engine: one per transaction it ran.
    commits: int = 0

    @property
    def dead_queue(self) -> str:
        return Topology.dead_letter_queue(self.queue)

    def consumer(self, *, prefetch: int) -> Consumer:
        return Consumer(
            queue=self.queue,
            inbox=Inbox(inbox_table, self.consumer_name),
            handler=self.recorder.handle,
            prepare=self.recorder.prepare,
            sessions=self.sessions,
            prefetch=prefetch,
            delivery_limit=LIMIT,
        )

    async def publish(self, body: bytes) -> None:
        exchange = await self.channel.get_exchange(self.exchange)
        await exchange.publish(
            aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="k",
            mandatory=True,
        )

    async def send(self, *envelopes: Envelope) -> None:
        for envelope in envelopes:
            await self.publish(envelope.to_bytes())

    async def ready(self, queue: str | None = None) -> int:
        return await message_count(self.channel, queue or self.queue)

    async def take(self, count: int, channel: AbstractChannel) -> list[AbstractIncomingMessage]:
        """``count`` deliveries, unacknowledged, on ``channel``: one batch to hand over."""

        async def ready() -> int:
            return await self.ready()

        await wait_for(ready, until=lambda n: n == count, what=f"{count} messages queued")
        queue = await channel.get_queue(self.queue, ensure=False)
        taken = [await queue.get(no_ack=False) for _ in range(count)]
        return [m for m in taken if m is not None]

    async def effects(self) -> Counter[uuid.UUID]:
        """How many times each message took effect (committed outbox rows)."""
        async with self.sessions() as session:
            bodies = (
                await session.execute(
                    select(outbox.c.body).where(outbox.c.exchange == self.exchange)
                )
            ).scalars()
            causes = [Envelope.from_bytes(bytes(b)).causation_id for b in bodies]
        return Counter(c for c in causes if c is not None)

    async def inbox_rows(self, message_id: uuid.UUID) -> int:
        async with self.sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(inbox_table)
                .where(
                    inbox_table.c.consumer == self.consumer_name,
                    inbox_table.c.message_id == message_id,
                )
            )
        return int(count or 0)

    @asynccontextmanager
    async def running(self, consumer: Consumer) -> AsyncIterator[None]:
        """Run ``consumer`` on a channel of its own; afterwards close that channel, so
        anything it left unacknowledged is back in the queue."""
        stop = asyncio.Event()
        channel = await self.connection.channel()
        task = asyncio.create_task(consumer.run(channel, stop))
        try:
            yield
        finally:
            stop.set()
            try:
                await task
            finally:
                await channel.close()


@pytest.fixture
async def lane(
    settings: Settings, broker: AbstractRobustConnection, db: AsyncEngine
) -> AsyncIterator[Lane]:
    """A quorum queue, its dead letters and an exchange, all deleted afterwards, with
    the outbox rows the test's handler wrote; the consumer gets an engine of its own,
    whose commits are counted."""
    prefix = f"{settings.namespace}.batch-{uuid.uuid4().hex[:8]}"
    topology = Topology(
        exchanges=(f"{prefix}.x",),
        queues=(QueueSpec(name=f"{prefix}.q", exchange=f"{prefix}.x", routing_keys=("k",)),),
        dead_letter_exchange=f"{prefix}.dlx",
        queue_type="quorum",
        delivery_limit=LIMIT + 10,  # the consumer's own limit must act first
    )
    channel = await broker.channel()
    await declare(channel, topology)
    engine = create_engine(settings.database_url)
    lane = Lane(
        queue=topology.queues[0].name,
        exchange=topology.exchanges[0],
        consumer_name=f"batch-test-{uuid.uuid4().hex[:8]}",
        channel=channel,
        connection=broker,
        sessions=session_factory(engine),
        recorder=Recorder(exchange=topology.exchanges[0]),
    )

    def committed(_: Connection) -> None:
        lane.commits += 1

    event.listen(engine.sync_engine, "commit", committed)
    yield lane
    await engine.dispose()
    async with db.begin() as conn:
        await conn.execute(delete(outbox).where(outbox.c.exchange == lane.exchange))
    for spec in topology.queues:
        await channel.queue_delete(spec.name)
        await channel.queue_delete(topology.dead_letter_queue(spec.name))
    for name in (*topology.exchanges, topology.dead_letter_exchange):
        await channel.exchange_delete(name)
    await channel.close()


def command(message_type: str = "DoIt") -> Envelope:
    saga_id = uuid.uuid4()
    return Envelope(message_type=message_type, saga_id=saga_id, correlation_id=saga_id)


async def test_messages_waiting_in_the_queue_are_applied_in_fewer_transactions(
    lane: Lane,
) -> None:
    sent = [command() for _ in range(40)]
    await lane.send(*sent)
    ids = {e.message_id for e in sent}

    async with lane.running(lane.consumer(prefetch=50)):

        async def applied() -> Counter[uuid.UUID]:
            return await lane.effects()

        await wait_for(applied, until=lambda c: set(c) == ids, what="every message applied")

    # Nothing unacknowledged went back to the queue when the consumer's channel closed,
    # and nothing was handled twice: one delivery each, acknowledged.
    assert await lane.ready() == 0
    assert await lane.effects() == Counter(ids)
    assert Counter(lane.recorder.calls) == Counter(ids)
    # Batches, one transaction each: fewer transactions than messages.
    batches = lane.recorder.batches
    assert sorted(i for b in batches for i in b) == sorted(ids)
    assert max(len(b) for b in batches) > 1
    assert lane.commits == len(batches) < len(sent)
    assert [await lane.inbox_rows(i) for i in ids] == [1] * len(ids)


async def test_a_poison_message_in_a_batch_is_dead_lettered_and_the_others_applied_once(
    lane: Lane,
) -> None:
    poison = command(POISON)
    good = [command() for _ in range(6)]
    await lane.send(*good[:3], poison, *good[3:])

    async with lane.running(lane.consumer(prefetch=20)):

        async def dead_letters() -> int:
            return await lane.ready(lane.dead_queue)

        await wait_for(dead_letters, until=lambda n: n == 1, what="poison message dead-lettered")

    assert await lane.ready() == 0
    # The poison did come in a batch with good messages, which failed as a whole...
    batches = lane.recorder.batches
    assert any(poison.message_id in b and len(b) > 1 for b in batches), batches
    # ...and every good message took effect exactly once all the same.
    assert await lane.effects() == Counter(e.message_id for e in good)
    # The poison went the single-message way: each of its LIMIT deliveries handled
    # alone (after any batch it came in had failed), counted by the quorum queue, then
    # dead-lettered. The good ones did not wait for that: all of them were committed
    # before its last delivery.
    in_batches = sum(1 for b in batches if poison.message_id in b and len(b) > 1)
    assert lane.recorder.calls.count(poison.message_id) == LIMIT + in_batches
    assert lane.recorder.poison_saw[-1] == len(good)
    assert await lane.inbox_rows(poison.message_id) == 0
    dead = await lane.channel.get_queue(lane.dead_queue, ensure=False)
    letter = await dead.get(no_ack=True)
    assert letter is not None
    assert Envelope.from_bytes(letter.body).message_id == poison.message_id
    deaths = (letter.headers or {}).get("x-death")
    assert isinstance(deaths, list)
    [death] = deaths
    assert isinstance(death, dict) and death["reason"] == "rejected"


async def test_the_same_message_delivered_twice_in_one_batch_is_applied_once(
    lane: Lane,
) -> None:
    twice, other = command(), command()
    await lane.send(twice, other, twice)
    consumer = lane.consumer(prefetch=10)
    channel = await lane.connection.channel()
    try:
        batch = await lane.take(3, channel)
        assert [Envelope.from_bytes(m.body).message_id for m in batch] == [
            twice.message_id,
            other.message_id,
            twice.message_id,
        ]
        await consumer.process_batch(batch)
    finally:
        await channel.close()  # hands back anything left unacknowledged

    assert await lane.ready() == 0  # all three acknowledged
    assert lane.commits == 1  # one transaction
    assert Counter(lane.recorder.calls) == Counter([twice.message_id, other.message_id])
    assert await lane.effects() == Counter([twice.message_id, other.message_id])
    assert await lane.inbox_rows(twice.message_id) == 1


async def test_an_unparseable_body_in_a_batch_is_dead_lettered_and_the_others_applied(
    lane: Lane,
) -> None:
    first, last = command(), command()
    garbage = b"this is not an envelope {"
    await lane.send(first)
    await lane.publish(garbage)
    await lane.send(last)
    consumer = lane.consumer(prefetch=10)
    channel = await lane.connection.channel()
    try:
        await consumer.process_batch(await lane.take(3, channel))
    finally:
        await channel.close()

    assert await lane.ready() == 0
    dead = await lane.channel.get_queue(lane.dead_queue, ensure=False)

    async def dead_letter() -> AbstractIncomingMessage | None:
        return await dead.get(no_ack=True, fail=False)

    letter = await wait_for(dead_letter, until=lambda m: m is not None, what="dead letter")
    assert letter is not None and letter.body == garbage
    assert await dead.get(no_ack=True, fail=False) is None
    # The two others were applied together, in one transaction.
    assert lane.recorder.batches == [[first.message_id, last.message_id]]
    assert lane.commits == 1
    assert await lane.effects() == Counter([first.message_id, last.message_id])


async def test_a_connection_lost_mid_batch_holds_the_batch_and_applies_it_whole(
    lane: Lane,
) -> None:
    sent = [command(), command(KILL_CONNECTION), command()]
    await lane.send(*sent)
    consumer = lane.consumer(prefetch=10)
    channel = await lane.connection.channel()
    try:
        await consumer.process_batch(await lane.take(3, channel))
    finally:
        await channel.close()

    assert lane.recorder.killed
    assert await lane.ready() == 0
    ids = [e.message_id for e in sent]
    # Tried again as the same batch (not message by message), committed once.
    assert lane.recorder.batches == [ids, ids]
    assert lane.commits == 1
    assert await lane.effects() == Counter(ids)
    assert lane.recorder.calls == [ids[0], ids[1], ids[0], ids[1], ids[2]]


def outgoing(exchange: str, n: int) -> OutgoingMessage:
    saga_id = uuid.uuid4()
    envelope = Envelope(
        message_type=f"Deferred{n}", saga_id=saga_id, correlation_id=saga_id, payload={"n": n}
    )
    return OutgoingMessage(envelope=envelope, exchange=exchange, routing_key="none")


async def written(sessions: async_sessionmaker[AsyncSession], exchange: str) -> list[str]:
    """Message types of the committed outbox rows aimed at ``exchange``, in id order."""
    async with sessions() as session:
        rows = await session.execute(
            select(outbox.c.message_type).where(outbox.c.exchange == exchange).order_by(outbox.c.id)
        )
        return list(rows.scalars())


async def test_outbox_rows_are_written_at_commit_in_the_order_they_were_added(
    lane: Lane,
) -> None:
    async with lane.sessions() as session:
        async with session.begin():
            await writer.add(session, outgoing(lane.exchange, 1))
            await writer.add(session, outgoing(lane.exchange, 2), outgoing(lane.exchange, 3))
            # Deferred: not sent yet, so not even this transaction reads them.
            assert await _effect_count(session, lane.exchange) == 0
            await writer.add(session, outgoing(lane.exchange, 4))
        assert await written(lane.sessions, lane.exchange) == [f"Deferred{n}" for n in range(1, 5)]


async def test_outbox_rows_of_a_rolled_back_transaction_are_never_written(
    lane: Lane,
) -> None:
    async with lane.sessions() as session:
        with pytest.raises(RuntimeError):
            async with session.begin():
                await writer.add(session, outgoing(lane.exchange, 1))
                raise RuntimeError("the handler failed")
        await session.begin()
        await writer.add(session, outgoing(lane.exchange, 2))
        await session.rollback()
        # The same session commits next: only what this transaction added is written.
        async with session.begin():
            await writer.add(session, outgoing(lane.exchange, 3))
    assert await written(lane.sessions, lane.exchange) == ["Deferred3"]


async def test_a_savepoint_rolled_back_drops_only_the_rows_added_inside_it(
    lane: Lane,
) -> None:
    async with lane.sessions() as session, session.begin():
        await writer.add(session, outgoing(lane.exchange, 1))
        with contextlib.suppress(RuntimeError):
            async with session.begin_nested():
                await writer.add(session, outgoing(lane.exchange, 2))
                raise RuntimeError("undo this part only")
        await writer.add(session, outgoing(lane.exchange, 3))
    assert await written(lane.sessions, lane.exchange) == ["Deferred1", "Deferred3"]
