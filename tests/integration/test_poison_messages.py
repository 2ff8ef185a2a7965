"""Poison and hostile messages.

A message a handler keeps failing on is dead-lettered after a bounded number of
deliveries, on quorum queues (the broker counts) and classic queues (we count).

Hostile messages published straight into every queue sagaway consumes, while real
sagas flow through the same queues, are dead-lettered on their first delivery or
dropped, each with a log line and a counter, and never cost the sagas around them a
redelivery, a failed batch or an effect applied twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.bench.invariants import find_problems
from sagaway.migrate import migrate
from sagaway.orchestrator.application import Names
from sagaway.orchestrator.participants import ORCHESTRATOR
from sagaway.orchestrator.tables import FINISHED_SQL, saga_events, sagas
from sagaway.orchestrator.tables import inbox as inbox_table
from sagaway.outbox.amqp import QueueSpec, Topology, declare, message_count
from sagaway.outbox.consumer import Consumer
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.envelope import Envelope
from sagaway.outbox.inbox import Inbox
from sagaway.outbox.settings import Settings
from sagaway.runners.backend import run_backend
from sagaway.services.api.schemas import OrderItem, OrderRequest
from sagaway.services.inventory.stock import set_available
from sagaway.services.orders.placing import place_order
from sagaway.services.payment.credit import set_limit
from sagaway.wiring import build_coordinator, build_topology
from tests.support import (
    INBOX_TABLES,
    OUTBOX_TABLES,
    captured_log_events,
    delete_topology,
    drop_database,
    isolated_settings,
    metric,
    take_dead_letters,
    wait_for,
)

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


# --- hostile messages among real sagas ---------------------------------------------------

SECRET = "hostile-secret-5e1f"  # in every hostile payload; no log line may carry it
TEN_MB = 10 * 1024 * 1024
# Orders are placed in rounds, each waiting for the last to end: ROUNDS of them alone
# first (the control, and real messages to forge duplicates of), then ROUNDS each with a
# round of hostile messages published while its sagas run.
ROUNDS = 10
ORDERS_PER_ROUND = 4
# What each hostile kind must become, by its consumer: (reason, action).
DEAD, DROPPED = "dead_lettered", "dropped"


def expected_outcome(kind: str, consumer: str) -> tuple[str, str]:
    """What becomes of a hostile kind in ``consumer``'s queue, and why.

    - not_json, not_envelope: no redelivery can make them parse; dead letter at once
      (not after SAGAWAY_DELIVERY_LIMIT failed deliveries) for an operator to look at.
    - unknown_type, invalid_payload: no handler can apply them, now or later; dead
      letter at once, judged before the batch's transaction so its neighbours never
      roll back.
    - nul_character: PostgreSQL cannot store U+0000, so it would fail in the handler's
      transaction on every delivery; dead letter at once.
    - too_large: refused by its length before anything parses it; dead letter at once.
    - unknown_saga: a reply for a saga that does not exist is the orchestrator's
      business: it is logged, counted and dropped (it never creates a saga; there is
      nothing to retry). A participant has no reply types at all: there it is an
      unknown type.
    - conflicting_duplicate: an id the consumer already processed, with other content:
      the inbox drops it as it drops any duplicate (the first one won), and it is
      logged as a conflict, since a redelivery never changes its content.
    """
    if kind == "unknown_saga":
        return ("unknown_saga", DROPPED) if consumer == ORCHESTRATOR else ("unknown_type", DEAD)
    if kind == "conflicting_duplicate":
        return (kind, DROPPED)
    return (kind, DEAD)


@dataclass
class Installation:
    """A database and a namespace of the test's own, with the backend running on them."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    channel: AbstractChannel
    plenty: str
    scarce: str
    rich: str
    poor: str
    saga_ids: list[uuid.UUID] = field(default_factory=list)

    def queue_of(self, consumer: str) -> str:
        return Names(self.settings.namespace).queue(consumer)

    async def place(self, n: int) -> None:
        """``n`` orders through the API's code path: every fifth short of stock, every
        fifth refused for credit, the rest completed."""
        coordinator = build_coordinator(self.settings)

        async def one(i: int) -> uuid.UUID:
            customer, sku, quantity, price = {
                3: (self.rich, self.scarce, 2, 100),
                4: (self.poor, self.plenty, 1, 5000),
            }.get(i % 5, (self.rich, self.plenty, 1, 100))
            request = OrderRequest(
                customer_id=customer,
                items=[OrderItem(sku=sku, quantity=quantity, unit_price_cents=price)],
            )
            async with self.sessions() as session, session.begin():
                placed = await place_order(
                    session, coordinator, request, idempotency_key=None, correlation_id=uuid.uuid4()
                )
            return placed.saga_id

        self.saga_ids += await asyncio.gather(*(one(len(self.saga_ids) + i) for i in range(n)))

    async def unfinished(self) -> int:
        async with self.sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(sagas)
                .where(sagas.c.id.in_(self.saga_ids), text(f"NOT ({FINISHED_SQL})"))
            )
        return int(count or 0)

    async def consuming(self) -> int:
        """How many of the installation's queues have a consumer."""
        channel = await self.channel.get_underlay_channel()
        declared = [
            await channel.queue_declare(q.name, passive=True)
            for q in build_topology(self.settings).queues
        ]
        return sum(1 for d in declared if d.consumer_count)

    async def durations(self) -> tuple[str, str]:
        """Median and longest saga, start to end, of the control rounds and of the rest."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(sagas.c.id, sagas.c.updated_at - sagas.c.created_at).where(
                    sagas.c.id.in_(self.saga_ids)
                )
            )
            took = {saga_id: spent.total_seconds() * 1000 for saga_id, spent in rows}

        def summary(ids: list[uuid.UUID]) -> str:
            spent = sorted(took[i] for i in ids)
            return f"{spent[len(spent) // 2]:.0f}/{spent[-1]:.0f} ms"

        first = ROUNDS * ORDERS_PER_ROUND
        return summary(self.saga_ids[:first]), summary(self.saga_ids[first:])

    async def consumed_by(self, consumer: str) -> list[Envelope]:
        """Real messages ``consumer`` has processed, read back from the outboxes that
        wrote them."""
        inbox = INBOX_TABLES[consumer]
        processed = select(inbox.c.message_id).where(inbox.c.consumer == consumer)
        found: list[Envelope] = []
        async with self.sessions() as session:
            for table in OUTBOX_TABLES.values():
                bodies = await session.scalars(
                    select(table.c.body).where(table.c.message_id.in_(processed))
                )
                found += [Envelope.from_bytes(bytes(b)) for b in bodies]
        return found

    async def publish(self, queue: str, body: bytes, tag: str) -> None:
        """Straight into ``queue`` (the default exchange), as anyone with access could."""
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                body=body, message_id=tag, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            routing_key=queue,
        )


@pytest.fixture
async def installation(settings: Settings) -> AsyncIterator[Installation]:
    """A fresh database and namespace beside the run's (whose ``settings`` also set up
    logging), migrated and declared; dropped and deleted after."""
    name = f"{settings.namespace.removeprefix('test-')}h{uuid.uuid4().hex[:6]}"
    # No step deadline within the test: a saga may only end through its own messages.
    ours = isolated_settings(name, step_timeout_s=300.0)
    await migrate(ours)
    engine = create_engine(ours.database_url)
    connection = await aio_pika.connect(ours.amqp_url)
    try:
        channel = await connection.channel()
        await declare(channel, build_topology(ours))
        sessions = session_factory(engine)
        own = Installation(
            settings=ours,
            sessions=sessions,
            channel=channel,
            plenty=f"{name}-plenty",
            scarce=f"{name}-scarce",
            rich=f"{name}-rich",
            poor=f"{name}-poor",
        )
        async with sessions() as session, session.begin():
            await set_available(session, own.plenty, 10_000)
            await set_available(session, own.scarce, 3)
            await set_limit(session, own.rich, 10**9)
            await set_limit(session, own.poor, 1000)
        yield own
    finally:
        await connection.close()
        await engine.dispose()
        await delete_topology(ours)
        await drop_database(ours)


def hostile_messages(
    consumer: str, real: list[Envelope], reply_type: str, round_: int
) -> dict[str, bytes]:
    """One message of each hostile kind for ``consumer``, built from messages it really
    processed (``real``) so that only the hostile part is wrong."""
    sample = real[round_ % len(real)]
    # Another real message of the same type, for a duplicate that fits its type.
    others = [e for e in real if e.message_type == sample.message_type and e != sample]
    other_payload = others[round_ % len(others)].payload if others else sample.payload

    def variant(**update: object) -> bytes:
        return sample.model_copy(update={"message_id": uuid.uuid4(), **update}).to_bytes()

    return {
        "not_json": b"\xff\x00" + SECRET.encode() + b" {{ not json",
        "not_envelope": json.dumps({"secret": SECRET, "message_type": 42}).encode(),
        "unknown_type": variant(message_type="LaunchMissiles", payload={"secret": SECRET}),
        "unknown_saga": Envelope(
            message_type=reply_type,
            saga_id=uuid.uuid4(),
            correlation_id=uuid.uuid4(),
            causation_id=uuid.uuid4(),
            payload={"outcome": "succeeded", "reason": None, "secret": SECRET},
        ).to_bytes(),
        "invalid_payload": variant(payload={"secret": SECRET}),
        "nul_character": variant(payload={**sample.payload, "note": f"{SECRET}\x00"}),
        # The same id as a message already processed, other content.
        "conflicting_duplicate": sample.model_copy(
            update={"payload": {**other_payload, "forged": SECRET}}
        ).to_bytes(),
    }


def too_large(real: list[Envelope]) -> bytes:
    """A real message's envelope grown past 10 MB: it would parse, if it were parsed."""
    sample = real[0]
    pad = SECRET + "x" * TEN_MB
    return sample.model_copy(
        update={"message_id": uuid.uuid4(), "payload": {**sample.payload, "pad": pad}}
    ).to_bytes()


@pytest.mark.timeout(120)
async def test_hostile_messages_in_every_queue_do_not_disturb_the_sagas_flowing_past(
    installation: Installation,
) -> None:
    own = installation
    topology = build_topology(own.settings)
    # Every queue the installation consumes, named from the consumers that read them.
    consumers = {own.queue_of(c): c for c in INBOX_TABLES}
    assert set(consumers) == {q.name for q in topology.queues}

    stop = asyncio.Event()
    backend = asyncio.create_task(run_backend(own.settings, stop=stop))
    try:
        await wait_for(
            own.consuming, until=partial(operator.eq, len(consumers)), what="consumers up"
        )
        with captured_log_events(level=logging.INFO) as events:
            started = time.perf_counter()
            for _ in range(ROUNDS):
                await own.place(ORDERS_PER_ROUND)
                await wait_for(own.unfinished, until=lambda n: n == 0, within=60, what="a round")
            quiet_s = time.perf_counter() - started

            real = {c: await own.consumed_by(c) for c in consumers.values()}
            assert all(real.values()), {c: len(r) for c, r in real.items()}
            reply_type = real[ORCHESTRATOR][0].message_type
            sent: Counter[tuple[str, str, str]] = Counter()  # queue, reason, action
            forged: list[tuple[str, Envelope]] = []

            async def hostile_round(round_: int) -> None:
                for queue, consumer in consumers.items():
                    kinds = hostile_messages(consumer, real[consumer], reply_type, round_)
                    if round_ == 0:
                        kinds["too_large"] = too_large(real[consumer])
                    for kind, body in kinds.items():
                        await own.publish(queue, body, tag=f"{kind}-{round_}")
                        sent[(queue, *expected_outcome(kind, consumer))] += 1
                    forged.append((consumer, Envelope.from_bytes(kinds["conflicting_duplicate"])))

            started = time.perf_counter()
            for round_ in range(ROUNDS):
                # The round's hostile messages go in while its sagas are under way.
                await asyncio.gather(own.place(ORDERS_PER_ROUND), hostile_round(round_))
                await wait_for(own.unfinished, until=lambda n: n == 0, within=60, what="a round")
            hostile_s = time.perf_counter() - started

            async def rejected() -> Counter[tuple[str, str, str]]:
                return Counter(
                    {
                        key: int(metric("sagaway_messages_rejected_total", **labels))
                        for key in sent
                        for labels in [dict(zip(("queue", "reason", "action"), key, strict=True))]
                    }
                )

            await wait_for(rejected, until=lambda c: c == sent, within=30, what="every rejection")
    finally:
        stop.set()
        await asyncio.wait_for(backend, timeout=30)

    # Every saga ended as its order called for, with the invariants holding.
    async with own.sessions() as session:
        statuses = Counter(
            await session.scalars(select(sagas.c.status).where(sagas.c.id.in_(own.saga_ids)))
        )
    total = 2 * ROUNDS * ORDERS_PER_ROUND
    assert sum(statuses.values()) == total
    assert set(statuses) <= {"COMPLETED", "COMPENSATED"}, statuses
    assert statuses["COMPLETED"] >= 3 * total // 5, statuses  # the plenty, credited orders
    assert statuses["COMPENSATED"] >= total // 5, statuses  # at least the credit refusals
    problems = await find_problems(
        own.sessions,
        stock_totals={own.plenty: 10_000, own.scarce: 3},
        customers_used=[own.rich, own.poor],
    )
    assert not problems, problems

    # A forged duplicate took no effect: the one reply, or the one history entry, stays.
    async with own.sessions() as session:
        for consumer, envelope in forged:
            if consumer == ORCHESTRATOR:
                effects = await session.scalar(
                    select(func.count())
                    .select_from(saga_events)
                    .where(saga_events.c.message_id == envelope.message_id)
                )
            else:
                replies = await session.scalars(select(OUTBOX_TABLES[consumer].c.body))
                effects = sum(
                    Envelope.from_bytes(bytes(b)).causation_id == envelope.message_id
                    for b in replies
                )
            assert effects == 1, (consumer, envelope.message_type)

    # Nothing left behind or handed back, and each dead letter died on its first delivery.
    for queue, consumer in consumers.items():
        assert await message_count(own.channel, queue) == 0, queue
        expected = Counter(
            {reason: n for (q, reason, action), n in sent.items() if q == queue and action == DEAD}
        )
        dead = topology.dead_letter_queue(queue)
        await wait_for(
            partial(message_count, own.channel, dead),
            until=partial(operator.eq, expected.total()),
            what=f"dead letters in {dead}",
        )
        letters = await take_dead_letters(await own.channel.get_queue(dead, ensure=False))
        died = Counter(
            expected_outcome(str(tag).rsplit("-", 1)[0], consumer)[0] for tag, _ in letters
        )
        assert died == expected, queue
        assert {count for _, count in letters} == {1}, queue

    # No redelivery, no failed batch, no dead letter by delivery count, anywhere.
    for queue in consumers:
        assert metric("sagaway_messages_consumed_total", queue=queue, result="failed") == 0
        assert metric("sagaway_consumer_batches_total", queue=queue, outcome="fell_back") == 0
        assert (
            metric("sagaway_messages_dead_lettered_total", queue=queue, reason="delivery_limit")
            == 0
        )

    # One line per hostile message, saying what became of it, in a few hundred bytes, and
    # never a word of its payload.
    logged = Counter(
        (e["queue"], e["reason"], e["action"]) for e in events if e["event"] == "message rejected"
    )
    assert logged == sent
    assert not [e for e in events if SECRET in repr(e)]
    longest = max(len(repr(e)) for e in events if e["event"] == "message rejected")
    assert longest < 1500, longest

    batches = {
        consumer: (
            metric("sagaway_consumer_batches_total", queue=q, outcome="committed"),
            metric("sagaway_consumer_batched_messages_total", queue=q),
        )
        for q, consumer in consumers.items()
    }
    alone, among = await own.durations()
    batched = ", ".join(f"{c} {b:.0f} ({m:.0f})" for c, (b, m) in batches.items())
    print(
        f"\n{ROUNDS} rounds of {ORDERS_PER_ROUND} sagas alone: {quiet_s:.2f} s, "
        f"saga start to end p50/max {alone}; {ROUNDS} more with {sum(sent.values())} hostile "
        f"messages: {hostile_s:.2f} s, {among}; longest log line {longest} chars; batches "
        f"committed (messages in them): {batched}"
    )
