"""Handoff: a consumer's transaction publishes the outbox rows it commits itself.

On the real PostgreSQL and RabbitMQ. Rows written after ``Handoff.start`` are inserted
already claimed (the batch's token, a lease); after the commit ``Handoff.publish``
sends them with confirms and marks them published under that token, or hands them
back to the relay when the broker refuses them or is away. A process that never
publishes leaves them to its lease, after which the relay takes them. The outbox
insert trigger wakes the relay only for rows nobody claimed.

The handoff publishes on a broker connection of its own, as a consumer process does;
the relay, where one runs, on another. Rows go to the orchestrator's outbox
(``sagas.outbox``) unless said otherwise, aimed at an exchange and queue of the test
(see ``test_outbox_relay``); every row a test aims elsewhere is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import Table, delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.orchestrator.application import Names
from sagaway.orchestrator.participants import ORCHESTRATOR
from sagaway.orchestrator.tables import outbox
from sagaway.outbox.amqp import connect, message_count
from sagaway.outbox.consumer import Consumer
from sagaway.outbox.database import raw_connect
from sagaway.outbox.deferred import flush_deferred
from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.handoff import Handoff, HandoffBatch
from sagaway.outbox.inbox import Inbox
from sagaway.outbox.publisher import AioPikaPublisher
from sagaway.outbox.relay import Relay, RelayOptions
from sagaway.outbox.settings import Settings
from sagaway.outbox.wakeup import CHANNEL
from sagaway.outbox.writer import OutboxWriter
from sagaway.services import contracts as c
from sagaway.wiring import build_dispatcher
from tests.integration.test_outbox_relay import Target, message, relay, take, write
from tests.support import INBOX_TABLES, OUTBOX_TABLES, wait_for

pytest_plugins = ["tests.integration.test_outbox_relay"]

writer = OutboxWriter(outbox)
LEASE_S = 30.0


@dataclass
class Leftovers:
    """Exchanges a test aimed rows at besides its target: their rows are deleted after."""

    exchanges: set[str] = field(default_factory=set)

    def name(self, settings: Settings, what: str) -> str:
        exchange = f"{settings.namespace}.handoff-{what}-{uuid.uuid4().hex[:8]}"
        self.exchanges.add(exchange)
        return exchange


@pytest.fixture
async def leftovers(db: AsyncEngine) -> AsyncIterator[Leftovers]:
    found = Leftovers()
    yield found
    if found.exchanges:
        async with db.begin() as conn:
            for table in OUTBOX_TABLES.values():
                await conn.execute(delete(table).where(table.c.exchange.in_(found.exchanges)))


@pytest.fixture
async def consumer_broker(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    """The consumer process's own broker connection (the relay has another)."""
    connection = await connect(settings.amqp_url, name="handoff-test")
    yield connection
    await connection.close()


def handoff_on(
    db: AsyncEngine, connection: AbstractRobustConnection, *, lease_s: float = LEASE_S
) -> Handoff:
    return Handoff(
        engine=db,
        publisher=AioPikaPublisher(connection, timeout_s=10),
        lease_s=lease_s,
    )


@pytest.fixture
def handoff(db: AsyncEngine, consumer_broker: AbstractRobustConnection) -> Handoff:
    return handoff_on(db, consumer_broker)


async def stored(
    db: AsyncEngine, messages: Iterable[OutgoingMessage], table: Table = outbox
) -> dict[uuid.UUID, Any]:
    """Every column of the rows of ``messages`` in ``table``, by message id."""
    ids = [m.envelope.message_id for m in messages]
    async with db.connect() as conn:
        result = await conn.execute(select(table).where(table.c.message_id.in_(ids)))
        return {r.message_id: r for r in result}


async def one(db: AsyncEngine, written: OutgoingMessage, table: Table = outbox) -> Any:
    return (await stored(db, [written], table))[written.envelope.message_id]


async def db_now(db: AsyncEngine) -> datetime:
    async with db.connect() as conn:
        now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    assert isinstance(now, datetime)
    return now


async def commit_handing_off(
    sessions: async_sessionmaker[AsyncSession],
    handoff: Handoff,
    *messages: OutgoingMessage,
) -> HandoffBatch:
    """Commit ``messages`` in a transaction that hands off; the batch to publish."""
    async with sessions() as session, session.begin():
        batch = handoff.start(session)
        for m in messages:
            await writer.add(session, m)
        # Nothing is noted before the commit sends the rows.
        assert batch.rows == []
    return batch


def batch_ids(batch: HandoffBatch) -> list[uuid.UUID]:
    return [row["message_id"] for _, row in batch.rows]


def is_released(row: Any) -> bool:
    return row.claim_token is None and row.claimed_until is None and row.published_at is None


async def test_rows_are_written_claimed_and_published_right_after_the_commit(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    handoff: Handoff,
    publisher: AioPikaPublisher,
    target: Target,
) -> None:
    saga_id = uuid.uuid4()
    sent = [message(target, saga_id=saga_id, seq=n) for n in range(3)]

    batch = await commit_handing_off(sessions, handoff, *sent)

    assert batch_ids(batch) == [m.envelope.message_id for m in sent]
    now = await db_now(db)
    for row in (await stored(db, sent)).values():
        assert row.claim_token == batch.token
        assert row.claimed_until == batch.claimed_until > now
        assert (row.published_at, row.attempts) == (None, 0)

    await handoff.publish(batch)

    received = await take(target.queue, 3)
    assert [m.message_id for m in received] == [str(m.envelope.message_id) for m in sent]
    assert [m.body for m in received] == [m.envelope.to_bytes() for m in sent]
    assert {m.type for m in received} == {"RelayTestCommand"}
    assert [m.correlation_id for m in received] == [str(m.envelope.correlation_id) for m in sent]
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in received)
    marked = await stored(db, sent)
    for row in marked.values():
        assert row.published_at is not None and row.attempts == 1
        assert (row.claim_token, row.claimed_until) == (None, None)

    # The relay finds nothing of them left to do.
    await relay(db, publisher).drain_once()
    assert await target.queue.get(no_ack=True, fail=False) is None
    again = await stored(db, sent)
    assert {k: (r.published_at, r.attempts) for k, r in again.items()} == {
        k: (r.published_at, 1) for k, r in marked.items()
    }


async def test_rows_of_several_outboxes_in_one_transaction_are_all_handed_off(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    handoff: Handoff,
    target: Target,
    leftovers: Leftovers,
) -> None:
    leftovers.exchanges.add(target.exchange)  # the inventory outbox's rows too
    inventory = OutboxWriter(OUTBOX_TABLES["inventory"])
    ours, theirs = message(target, seq=0), message(target, seq=1)

    async with sessions() as session, session.begin():
        batch = handoff.start(session)
        await writer.add(session, ours)
        await inventory.add(session, theirs)
    await handoff.publish(batch)

    received = await take(target.queue, 2)
    assert {m.message_id for m in received} == {
        str(ours.envelope.message_id),
        str(theirs.envelope.message_id),
    }
    for row in (await one(db, ours), await one(db, theirs, inventory.table)):
        assert row.published_at is not None and row.claim_token is None


@pytest.mark.parametrize("fault", ["unroutable", "missing_exchange"])
async def test_a_row_the_broker_refuses_goes_back_to_the_relay_and_its_failure_rules(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    handoff: Handoff,
    publisher: AioPikaPublisher,
    target: Target,
    leftovers: Leftovers,
    fault: str,
) -> None:
    if fault == "unroutable":
        # The exchange exists; nothing is bound by this key, and the publish is mandatory.
        refused = message(target, routing_key="routes-nowhere")
        error = "NO_ROUTE"
    else:
        envelope = message(target).envelope
        refused = OutgoingMessage(
            envelope=envelope, exchange=leftovers.name(settings, "missing"), routing_key="k"
        )
        error = "does not exist"
    fine = message(target)
    batch = await commit_handing_off(sessions, handoff, refused, fine)

    await handoff.publish(batch)

    [received] = await take(target.queue, 1)
    assert received.message_id == str(fine.envelope.message_id)
    assert (await one(db, fine)).published_at is not None
    # Handed back at once, not counted: whether and when to retry is the relay's call.
    released = await one(db, refused)
    assert is_released(released)
    assert (released.attempts, released.last_error, released.next_attempt_at) == (0, None, None)

    the_relay = Relay(
        engine=db,
        tables=[outbox],
        publisher=publisher,
        options=RelayOptions(batch_size=200, max_attempts=3, retry_backoff_s=60),
    )
    await the_relay.drain_once()

    failed = await one(db, refused)
    assert failed.published_at is None and failed.dead_at is None
    assert failed.attempts == 1
    assert failed.last_error is not None and error in failed.last_error
    assert failed.next_attempt_at > await db_now(db)
    assert failed.claim_token is None
    # Backed off: the next pass leaves it alone.
    await the_relay.drain_once()
    assert (await one(db, refused)).attempts == 1


async def test_a_row_whose_publish_finds_the_broker_away_goes_back_uncounted(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    publisher: AioPikaPublisher,
    target: Target,
) -> None:
    lost = await connect(settings.amqp_url, name="handoff-test-lost")
    await lost.close()
    cut_off = handoff_on(db, lost)
    written = message(target)
    batch = await commit_handing_off(sessions, cut_off, written)

    await cut_off.publish(batch)

    row = await one(db, written)
    assert is_released(row) and row.attempts == 0
    # The relay delivers it as soon as it runs (no lease to wait out).
    assert await relay(db, publisher).drain_once() >= 1
    [received] = await take(target.queue, 1)
    assert received.message_id == str(written.envelope.message_id)
    assert (await one(db, written)).attempts == 1


async def test_rows_of_a_process_that_died_after_its_commit_wait_out_the_lease(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    consumer_broker: AbstractRobustConnection,
    publisher: AioPikaPublisher,
    target: Target,
) -> None:
    short = handoff_on(db, consumer_broker, lease_s=0.5)
    written = message(target)
    # Committed, then the process dies: ``publish`` is never called.
    batch = await commit_handing_off(sessions, short, written)
    the_relay = relay(db, publisher)

    await the_relay.drain_once()
    checked_at = await db_now(db)

    row = await one(db, written)
    assert checked_at < row.claimed_until, "the relay pass ran after the lease: proves nothing"
    assert row.published_at is None and row.claim_token == batch.token
    assert await target.queue.get(no_ack=True, fail=False) is None

    async def published() -> Any:
        await the_relay.drain_once()
        return (await one(db, written)).published_at

    published_at = await wait_for(published, within=10, what="relay published after the lease")
    assert published_at >= batch.claimed_until
    [received] = await take(target.queue, 1)
    assert received.message_id == str(written.envelope.message_id)
    after = await one(db, written)
    assert (after.attempts, after.claim_token) == (1, None)

    # Had it only been slow, its late publish repeats the message (consumers drop
    # repeats) but cannot mark a row that is no longer its own.
    await short.publish(batch)
    [repeat] = await take(target.queue, 1)
    assert repeat.message_id == str(written.envelope.message_id)
    late = await one(db, written)
    assert (late.published_at, late.attempts) == (published_at, 1)


class HandlerFailed(Exception):
    pass


@pytest.mark.parametrize(
    "ending",
    [
        "exception",
        "rollback",
        "flushed_then_rollback",
    ],
)
async def test_a_handoff_transaction_that_rolls_back_leaves_nothing(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    handoff: Handoff,
    target: Target,
    ending: str,
) -> None:
    written = message(target)
    async with sessions() as session:
        with contextlib.suppress(HandlerFailed):
            async with session.begin():
                batch = handoff.start(session)
                await writer.add(session, written)
                if ending == "flushed_then_rollback":
                    await flush_deferred(session)
                if ending == "exception":
                    raise HandlerFailed
                await session.rollback()

    assert await stored(db, [written]) == {}
    assert batch.rows == []
    await handoff.publish(batch)
    assert await target.queue.get(no_ack=True, fail=False) is None


async def test_rows_flushed_inside_a_rolled_back_savepoint_are_not_published(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    handoff: Handoff,
    target: Target,
) -> None:
    kept, undone = message(target, seq=0), message(target, seq=1)
    async with sessions() as session, session.begin():
        batch = handoff.start(session)
        await writer.add(session, kept)
        with contextlib.suppress(HandlerFailed):
            async with session.begin_nested():
                await writer.add(session, undone)
                # What the engine does before a local step when it starts a saga.
                await flush_deferred(session)
                raise HandlerFailed

    assert set(await stored(db, [kept, undone])) == {kept.envelope.message_id}
    await handoff.publish(batch)
    received = await take(target.queue, 1)
    assert [m.message_id for m in received] == [str(kept.envelope.message_id)]
    assert batch_ids(batch) == [kept.envelope.message_id]


@dataclass
class Notifications:
    """Every NOTIFY on the outbox channel, in the order they arrived."""

    payloads: list[str] = field(default_factory=list)

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)

    async def wait_for(self, payload: str) -> list[str]:
        async def seen() -> list[str]:
            return list(self.payloads)

        return await wait_for(seen, until=lambda p: payload in p, what=f"NOTIFY {payload}")


@pytest.fixture
async def notifications(settings: Settings) -> AsyncIterator[Notifications]:
    """A LISTEN on the relay's channel, as ``outbox.wakeup.Wakeup`` opens it."""
    conn = await raw_connect(settings.database_url)
    found = Notifications()
    await conn.add_listener(CHANNEL, found.on_notify)
    yield found
    await conn.close()


async def test_only_rows_nobody_claimed_wake_the_relay(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    handoff: Handoff,
    target: Target,
    leftovers: Leftovers,
    notifications: Notifications,
) -> None:
    handed = message(target)
    inventory = OutboxWriter(OUTBOX_TABLES["inventory"])
    marker = message(target)
    marker = OutgoingMessage(
        envelope=marker.envelope, exchange=leftovers.name(settings, "marker"), routing_key="k"
    )

    batch = await commit_handing_off(sessions, handoff, handed)
    # Committed after it, unclaimed, in another outbox: notifications arrive in commit
    # order, so once the marker's is in, any of the handoff's would be too.
    async with sessions() as session, session.begin():
        await inventory.add(session, marker)

    assert await notifications.wait_for("inventory") == ["inventory"]
    assert (await one(db, handed)).claim_token == batch.token
    assert is_released(await one(db, marker, inventory.table))

    # The same outbox written without a handoff: unclaimed, and the relay is woken.
    plain = message(target)
    await write(sessions, plain)
    assert await notifications.wait_for("sagas") == ["inventory", "sagas"]
    row = await one(db, plain)
    assert is_released(row) and row.attempts == 0


async def test_a_participant_with_handoff_replies_with_no_relay_running(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    broker: AbstractRobustConnection,
    handoff: Handoff,
) -> None:
    participant = "notification"
    names = Names(settings.namespace)
    channel = await broker.channel()
    replies = await channel.get_queue(names.queue(ORCHESTRATOR), ensure=False)
    await replies.purge()
    consumer = Consumer(
        queue=names.queue(participant),
        inbox=Inbox(INBOX_TABLES[participant], participant),
        handler=build_dispatcher(participant, settings).handle,
        sessions=sessions,
        prefetch=10,
        handoff=handoff,
    )
    got: dict[uuid.UUID, Envelope] = {}

    async def replied(commands: Sequence[Envelope]) -> None:
        wanted = {e.message_id for e in commands}

        async def arrived() -> set[uuid.UUID]:
            while (m := await replies.get(no_ack=True, fail=False)) is not None:
                reply = Envelope.from_bytes(m.body)
                if reply.causation_id in wanted:
                    got[reply.causation_id] = reply
            return set(got) & wanted

        await wait_for(arrived, until=lambda ids: ids == wanted, what="replies delivered")

    # Waiting in the queue when the consumer starts: taken as a batch...
    together = [notify_command() for _ in range(5)]
    for command in together:
        await send_command(channel, names, participant, command)
    stop = asyncio.Event()
    consumer_channel = await broker.channel()
    running = asyncio.create_task(consumer.run(consumer_channel, stop))
    try:
        await replied(together)
        # ...and one arriving alone, once the consumer is idle: the single-message path.
        alone = [notify_command()]
        await send_command(channel, names, participant, alone[0])
        await replied(alone)
    finally:
        stop.set()
        await running
        await consumer_channel.close()

    commands = [*together, *alone]
    assert {got[e.message_id].message_type for e in commands} == {c.CUSTOMER_NOTIFIED}
    assert all(got[e.message_id].saga_id == e.saga_id for e in commands)
    assert await message_count(channel, names.queue(participant)) == 0
    table = OUTBOX_TABLES[participant]
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(table).where(table.c.saga_id.in_([e.saga_id for e in commands]))
            )
        ).all()
    assert len(rows) == len(commands)
    assert all(r.published_at is not None and r.attempts == 1 for r in rows)
    assert all(r.claim_token is None and r.claimed_until is None for r in rows)
    await channel.close()


def notify_command() -> Envelope:
    saga_id = uuid.uuid4()
    return Envelope(
        message_type="NotifyCustomer",
        saga_id=saga_id,
        correlation_id=saga_id,
        payload={
            "order_id": str(uuid.uuid4()),
            "customer_id": "handoff-test",
            "template": "order_approved",
        },
    )


async def send_command(
    channel: AbstractChannel, names: Names, participant: str, command: Envelope
) -> None:
    exchange = await channel.get_exchange(names.commands_exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            body=command.to_bytes(),
            message_id=str(command.message_id),
            type=command.message_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=participant,
        mandatory=True,
    )


async def test_a_handoff_does_not_wait_for_an_earlier_row_the_relay_still_holds(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    handoff: Handoff,
    publisher: AioPikaPublisher,
    target: Target,
) -> None:
    saga_id = uuid.uuid4()
    stuck = message(target, saga_id=saga_id, seq=0, routing_key="routes-nowhere")
    await write(sessions, stuck)
    the_relay = Relay(
        engine=db,
        tables=[outbox],
        publisher=publisher,
        options=RelayOptions(batch_size=200, retry_backoff_s=60),
    )
    await the_relay.drain_once()
    assert (await one(db, stuck)).attempts == 1  # failed, backing off

    behind = message(target, saga_id=saga_id, seq=1)
    await handoff.publish(await commit_handing_off(sessions, handoff, behind))

    # The documented exception to per-saga order (README, "Batches, handoff and round
    # trips"): a consumer only writes a saga's next row in answer to a delivered
    # message, so an earlier row still unpublished belongs to an attempt the saga gave
    # up on; the new row goes now, and the old one stays the relay's, not lost.
    delivered = await target.queue.get(no_ack=True, fail=False)
    assert delivered is not None and delivered.message_id == str(behind.envelope.message_id)
    assert (await one(db, behind)).published_at is not None
    held = await one(db, stuck)
    assert held.published_at is None and held.attempts == 1 and held.dead_at is None
