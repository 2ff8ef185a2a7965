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
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.orchestrator.tables import inbox as inbox_table
from sagaway.orchestrator.tables import outbox
from sagaway.outbox.amqp import QueueSpec, Topology, declare, message_count
from sagaway.outbox.consumer import Consumer, Dropped
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.errors import Unprocessable
from sagaway.outbox.inbox import Inbox
from sagaway.outbox.settings import Settings
from sagaway.outbox.writer import OutboxWriter
from tests.support import captured_log_events, metric, take_dead_letters, wait_for

LIMIT = 3
POISON = "Poison"
KILL_CONNECTION = "KillConnection"
UNKNOWN = "Unknown"  # refused by the lane's screen, before any transaction
REFUSE = "Refuse"  # found unprocessable by the handler, inside the transaction
DROP = "Drop"  # dropped on purpose by the handler
MAX_BYTES = 4096
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

    async def handle(self, session: AsyncSession, envelope: Envelope) -> Dropped | None:
        self.calls.append(envelope.message_id)
        if envelope.message_type == REFUSE:
            raise Unprocessable("the handler cannot apply this", reason="refused_by_handler")
        if envelope.message_type == DROP:
            return Dropped("dropped_by_handler")
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
        return None


def screen(envelope: Envelope) -> None:
    if envelope.message_type == UNKNOWN:
        raise Unprocessable(f"no handler for {envelope.message_type}", reason="unknown_type")


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
            screen=screen,
            max_message_bytes=MAX_BYTES,
        )

    async def publish(self, body: bytes, *, tag: str | None = None) -> None:
        exchange = await self.channel.get_exchange(self.exchange)
        await exchange.publish(
            aio_pika.Message(
                body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=tag
            ),
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


async def test_hostile_messages_in_a_batch_cost_it_no_extra_transaction(lane: Lane) -> None:
    good = [command() for _ in range(4)]
    # good[1]'s id again with other content: a forgery, or a producer's bug.
    twin = good[1].model_copy(update={"payload": {"other": "content"}})
    hostile = {
        "not_json": b"\xff\xfe{ not json",
        "too_large": command().model_copy(update={"payload": {"pad": "x" * MAX_BYTES}}).to_bytes(),
        "nul": command().model_copy(update={"payload": {"name": "a\x00b"}}).to_bytes(),
        "unknown": command(UNKNOWN).to_bytes(),
        "refuse": command(REFUSE).to_bytes(),
        "drop": command(DROP).to_bytes(),
        "twin": twin.to_bytes(),
    }
    before = {
        (reason, action): metric(
            "sagaway_messages_rejected_total", queue=lane.queue, reason=reason, action=action
        )
        for reason, action in (
            ("not_json", "dead_lettered"),
            ("too_large", "dead_lettered"),
            ("nul_character", "dead_lettered"),
            ("unknown_type", "dead_lettered"),
            ("refused_by_handler", "dead_lettered"),
            ("dropped_by_handler", "dropped"),
            ("conflicting_duplicate", "dropped"),
        )
    }
    sent = [
        ("good0", good[0].to_bytes()),
        ("not_json", hostile["not_json"]),
        ("good1", good[1].to_bytes()),
        ("too_large", hostile["too_large"]),
        ("nul", hostile["nul"]),
        ("unknown", hostile["unknown"]),
        ("refuse", hostile["refuse"]),
        ("good2", good[2].to_bytes()),
        ("drop", hostile["drop"]),
        ("twin", hostile["twin"]),
        ("good3", good[3].to_bytes()),
    ]
    for tag, body in sent:
        await lane.publish(body, tag=tag)
    consumer = lane.consumer(prefetch=20)
    channel = await lane.connection.channel()
    try:
        with captured_log_events("sagaway.outbox.consumer") as events:
            await consumer.process_batch(await lane.take(len(sent), channel))
    finally:
        await channel.close()

    assert await lane.ready() == 0  # everything settled, nothing handed back
    # One commit: what could be judged on arrival never entered the transaction, and the
    # one the handler refused cost a rollback, then the rest went again as one batch.
    assert lane.commits == 1
    assert metric("sagaway_consumer_batches_total", queue=lane.queue, outcome="committed") == 1
    assert metric("sagaway_consumer_batches_total", queue=lane.queue, outcome="fell_back") == 0
    drop_id = Envelope.from_bytes(hostile["drop"]).message_id
    refuse_id = Envelope.from_bytes(hostile["refuse"]).message_id
    g = [e.message_id for e in good]
    assert lane.recorder.batches == [
        [g[0], g[1], refuse_id, g[2], drop_id, g[3]],
        [g[0], g[1], g[2], drop_id, g[3]],
    ]
    assert await lane.effects() == Counter(e.message_id for e in good)
    assert await lane.inbox_rows(drop_id) == 1  # dropped, but remembered
    assert await lane.inbox_rows(refuse_id) == 0

    # Dead-lettered on their first delivery, every one.
    dead = await lane.channel.get_queue(lane.dead_queue, ensure=False)
    await wait_for(
        lambda: lane.ready(lane.dead_queue), until=lambda n: n == 5, what="five dead letters"
    )
    letters = await take_dead_letters(dead)
    assert sorted(tag for tag, _ in letters) == [
        "not_json",
        "nul",
        "refuse",
        "too_large",
        "unknown",
    ]
    assert all(count == 1 for _, count in letters), letters

    rejected = {
        (e["amqp_message_id"], e["reason"], e["action"])
        for e in events
        if e["event"] == "message rejected"
    }
    assert rejected == {
        ("not_json", "not_json", "dead_lettered"),
        ("too_large", "too_large", "dead_lettered"),
        ("nul", "nul_character", "dead_lettered"),
        ("unknown", "unknown_type", "dead_lettered"),
        ("refuse", "refused_by_handler", "dead_lettered"),
        ("drop", "dropped_by_handler", "dropped"),
        ("twin", "conflicting_duplicate", "dropped"),
    }
    for (reason, action), count in before.items():
        after = metric(
            "sagaway_messages_rejected_total", queue=lane.queue, reason=reason, action=action
        )
        assert after == count + 1, (reason, action)


async def test_an_id_reused_with_other_content_is_dropped_as_a_conflict(lane: Lane) -> None:
    first, second, old = command(), command(), command()
    await lane.send(first, second, old)
    consumer = lane.consumer(prefetch=10)

    async def handle(count: int, *, alone: bool = False) -> None:
        channel = await lane.connection.channel()
        try:
            taken = await lane.take(count, channel)
            if alone:
                await consumer.process(taken[0])
            else:
                await consumer.process_batch(taken)
        finally:
            await channel.close()

    await handle(3)
    # As if ``old`` had been recorded before the inbox kept digests.
    async with lane.sessions() as session, session.begin():
        await session.execute(
            update(inbox_table)
            .where(inbox_table.c.message_id == old.message_id)
            .values(digest=None)
        )

    def forged(original: Envelope, n: int) -> bytes:
        return original.model_copy(update={"payload": {"forged": n}}).to_bytes()

    commits = lane.commits
    with captured_log_events("sagaway.outbox.consumer") as events:
        # In one batch: a redelivery (the very bytes), a forgery, and a forgery of a
        # message recorded without a digest (nothing to compare: a plain duplicate).
        await lane.publish(first.to_bytes(), tag="redelivery")
        await lane.publish(forged(second, 1), tag="forgery-in-batch")
        await lane.publish(forged(old, 1), tag="forgery-of-old")
        await handle(3)
        # Alone: the single-message path compares the same way.
        await lane.publish(forged(second, 2), tag="forgery-alone")
        await handle(1, alone=True)

    assert await lane.ready() == 0
    assert await lane.ready(lane.dead_queue) == 0
    assert lane.commits == commits + 2  # the batch of three, then the one alone
    assert await lane.effects() == Counter([first.message_id, second.message_id, old.message_id])
    rejected = [
        (e["amqp_message_id"], e["reason"], e["action"])
        for e in events
        if e["event"] == "message rejected"
    ]
    assert rejected == [
        ("forgery-in-batch", "conflicting_duplicate", "dropped"),
        ("forgery-alone", "conflicting_duplicate", "dropped"),
    ]


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
