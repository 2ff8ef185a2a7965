"""The relay under crashes: killed mid-stream, and RabbitMQ restarted mid-stream.

A real ``sagaway relay`` process drains rows written to the orchestrator's outbox and
addressed to a queue of this test; whatever happens, every message arrives, and a
message arrives more than once only as a repeat of the same ``message_id``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.tables import outbox
from outbox.amqp import QueueSpec, Topology, declare, message_count
from outbox.envelope import Envelope, OutgoingMessage
from outbox.writer import OutboxWriter
from sagaway.settings import Settings
from tests.support import wait_for

ROWS = 3000
RESTART_ROWS = 15000
LOGS = Path(__file__).resolve().parents[1] / "artifacts" / "relay-crash-logs"


@dataclass(frozen=True, slots=True)
class Target:
    exchange: str
    queue: str


@pytest.fixture
async def own_broker(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    """A connection of this test's own: the shared one would try to restore, after the
    broker restart, every queue the earlier tests declared and deleted."""
    connection = await aio_pika.connect_robust(settings.amqp_url)
    yield connection
    await connection.close()


@pytest.fixture
async def target(settings: Settings, own_broker: AbstractRobustConnection) -> AsyncIterator[Target]:
    prefix = f"{settings.namespace}.crash-{uuid.uuid4().hex[:6]}"
    topo = Topology(
        exchanges=(f"{prefix}.x",),
        queues=(QueueSpec(name=f"{prefix}.q", exchange=f"{prefix}.x", routing_keys=("k",)),),
        dead_letter_exchange=f"{prefix}.dlx",
        queue_type=settings.queue_type,
    )
    channel = await own_broker.channel()
    await declare(channel, topo)
    yield Target(exchange=topo.exchanges[0], queue=topo.queues[0].name)
    channel = await _channel(own_broker)
    await channel.queue_delete(topo.queues[0].name)
    await channel.queue_delete(topo.dead_letter_queue(topo.queues[0].name))
    await channel.exchange_delete(topo.exchanges[0])
    await channel.exchange_delete(topo.dead_letter_exchange)
    await channel.close()


class RelayProcess:
    """``sagaway relay`` as a child process of the test."""

    def __init__(self, settings: Settings, name: str) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        env = os.environ | {
            "SAGAWAY_DATABASE_URL": settings.database_url,
            "SAGAWAY_AMQP_URL": settings.amqp_url,
            "SAGAWAY_NAMESPACE": settings.namespace,
            # Small batches and a short lease: a kill lands mid-stream, and the
            # killed relay's claims expire quickly.
            "SAGAWAY_RELAY_BATCH_SIZE": "50",
            "SAGAWAY_RELAY_LEASE_S": "2",
            "SAGAWAY_LOG_FORMAT": "json",
        }
        with (LOGS / f"{settings.namespace}-{name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sagaway", "relay"], env=env, stdout=log, stderr=log
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def relays(settings: Settings) -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.stop()


async def _write_rows(
    sessions: async_sessionmaker[AsyncSession], target: Target, count: int
) -> list[uuid.UUID]:
    writer = OutboxWriter(outbox)
    ids: list[uuid.UUID] = []
    saga = uuid.uuid4()
    async with sessions() as session, session.begin():
        for n in range(count):
            if n % 3 == 0:  # three messages per saga, so per-saga ordering is exercised
                saga = uuid.uuid4()
            envelope = Envelope(
                message_type="CrashTest", saga_id=saga, correlation_id=saga, payload={"n": n}
            )
            ids.append(envelope.message_id)
            await writer.add(
                session,
                OutgoingMessage(envelope=envelope, exchange=target.exchange, routing_key="k"),
            )
    return ids


async def _published(db: AsyncEngine, ids: list[uuid.UUID]) -> int:
    async with db.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count())
                    .select_from(outbox)
                    .where(outbox.c.message_id.in_(ids), outbox.c.published_at.is_not(None))
                )
            ).scalar_one()
        )


async def _channel(broker: AbstractRobustConnection) -> AbstractChannel:
    """A channel, once the robust connection is back (it reconnects every 5 s)."""

    async def attempt() -> AbstractChannel | None:
        try:
            return await broker.channel()
        except (RuntimeError, aio_pika.exceptions.AMQPError):
            return None

    channel = await wait_for(attempt, until=lambda c: c is not None, within=60, interval=0.2)
    assert channel is not None
    return channel


async def _received(broker: AbstractRobustConnection, queue: str, at_least: int) -> Counter[str]:
    """Every message in ``queue`` (acked), counted by message_id."""
    channel = await _channel(broker)
    await wait_for(
        lambda: message_count(channel, queue),
        until=lambda n: n >= at_least,
        within=60,
        what=f"{at_least} messages in the queue",
    )
    seen: Counter[str] = Counter()
    q = await channel.get_queue(queue)
    while True:
        message = await q.get(no_ack=True, fail=False)
        if message is None:
            break
        assert message.message_id is not None
        seen[message.message_id] += 1
    await channel.close()
    return seen


async def _until_published(
    db: AsyncEngine, ids: list[uuid.UUID], *, at_least: int, within: float
) -> None:
    await wait_for(
        lambda: _published(db, ids),
        until=lambda n: n >= at_least,
        within=within,
        what=f"{at_least} of the rows published",
    )


async def _assert_all_arrived_once_or_repeated(
    broker: AbstractRobustConnection, target: Target, ids: list[uuid.UUID]
) -> None:
    seen = await _received(broker, target.queue, len(ids))
    assert set(seen) == {str(i) for i in ids}  # every message arrived, nothing else did
    assert sum(seen.values()) >= len(ids)  # repeats possible, only of the same message_id


async def test_a_relay_killed_mid_stream_loses_nothing_after_restart(
    settings: Settings,
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    own_broker: AbstractRobustConnection,
    target: Target,
    relays: list[RelayProcess],
) -> None:
    ids = await _write_rows(sessions, target, ROWS)
    relays.append(RelayProcess(settings, "killed"))
    await _until_published(db, ids, at_least=ROWS // 4, within=60)
    relays[0].kill()
    assert await _published(db, ids) < ROWS, "the kill came too late to be mid-stream"

    relays.append(RelayProcess(settings, "restarted"))
    await _until_published(db, ids, at_least=ROWS, within=90)

    await _assert_all_arrived_once_or_repeated(own_broker, target, ids)


async def test_rabbitmq_restarted_mid_stream_loses_nothing(
    settings: Settings,
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    own_broker: AbstractRobustConnection,
    target: Target,
    relays: list[RelayProcess],
) -> None:
    # Enough rows that the relay is still busy when the (seconds-long) broker stop
    # lands: at a few thousand messages a second, 3000 can all go out before it.
    ids = await _write_rows(sessions, target, RESTART_ROWS)
    relays.append(RelayProcess(settings, "through-restart"))
    await _until_published(db, ids, at_least=RESTART_ROWS // 20, within=60)
    await _rabbitmqctl("stop_app")
    try:
        stalled = await _published(db, ids)
        assert stalled < RESTART_ROWS, "the restart came too late to be mid-stream"
    finally:
        await _rabbitmqctl("start_app")
    await _rabbitmqctl("await_startup")

    await _until_published(db, ids, at_least=RESTART_ROWS, within=180)
    assert relays[0].process.poll() is None, "the relay died with the broker"
    await _assert_all_arrived_once_or_repeated(own_broker, target, ids)


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {err.decode()}"
