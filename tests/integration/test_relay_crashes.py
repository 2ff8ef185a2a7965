"""The relay under crashes: killed mid-stream, RabbitMQ and PostgreSQL restarted mid-stream.

PostgreSQL is stopped on the run's private server (``private_postgres``), never the
machine's shared one; RabbitMQ is the machine's broker, stopped and started in place.

A real ``sagaway relay`` process drains rows written to the orchestrator's outbox and
addressed to a queue of this test; whatever happens, every message arrives, and a
message arrives more than once only as a repeat of the same ``message_id``.
"""

from __future__ import annotations

import asyncio
import json
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
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.tables import outbox
from outbox.amqp import QueueSpec, Topology, declare, message_count
from outbox.envelope import Envelope, OutgoingMessage
from outbox.writer import OutboxWriter
from sagaway.database import create_engine, session_factory
from sagaway.migrate import migrate
from sagaway.settings import Settings
from tests.private_postgres import PrivatePostgres
from tests.support import drop_database, free_port, wait_for

ROWS = 3000
RESTART_ROWS = 15000
OUTAGE_ROWS = 500
ALARM_ROWS = 2000
DB_BACKOFF = "database unavailable, relay backing off"
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

    def __init__(self, settings: Settings, name: str, **env: str) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = LOGS / f"{settings.namespace}-{name}.log"
        env = os.environ | {
            "SAGAWAY_DATABASE_URL": settings.database_url,
            "SAGAWAY_AMQP_URL": settings.amqp_url,
            "SAGAWAY_NAMESPACE": settings.namespace,
            # Small batches and a short lease: a kill lands mid-stream, and the
            # killed relay's claims expire quickly.
            "SAGAWAY_RELAY_BATCH_SIZE": "50",
            "SAGAWAY_RELAY_LEASE_S": "2",
            "SAGAWAY_LOG_FORMAT": "json",
            "SAGAWAY_METRICS_PORT": str(self.port),
            **env,
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sagaway", "relay"], env=env, stdout=log, stderr=log
            )

    async def readiness(self) -> tuple[int, dict[str, str]]:
        """``/readyz`` of this relay: status code and body (0 while it does not answer)."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                response = await client.get(f"http://127.0.0.1:{self.port}/readyz")
        except httpx.TransportError:
            return 0, {}
        return response.status_code, response.json()

    async def until_readiness(self, status: int, *, naming: str | None = None) -> None:
        """Wait until ``/readyz`` answers ``status`` (and names ``naming`` as down)."""
        await wait_for(
            self.readiness,
            until=lambda r: r[0] == status and (naming is None or r[1].get(naming) == "down"),
            within=60,
            interval=0.1,
            what=f"/readyz {status}" + (f" naming {naming}" if naming else ""),
        )

    def backoffs(self, event: str) -> list[float]:
        """The ``delay_s`` of each logged back-off with this ``event``, in order."""
        delays = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == event:
                    delays.append(float(entry["delay_s"]))
        return delays

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
    """Every message in ``queue`` (taken off it), counted by message_id."""
    channel = await _channel(broker)
    ready = await wait_for(
        lambda: message_count(channel, queue),
        until=lambda n: n >= at_least,
        within=60,
        what=f"{at_least} messages in the queue",
    )
    seen: Counter[str] = Counter()

    async def take(message: AbstractIncomingMessage) -> None:
        assert message.message_id is not None
        seen[message.message_id] += 1

    # Consumed with a deep prefetch, not fetched one basic.get at a time: fifteen
    # thousand round trips took over a minute on a busy machine.
    await channel.set_qos(prefetch_count=1000)
    q = await channel.get_queue(queue)
    tag = await q.consume(take, no_ack=True)
    try:

        async def taken() -> int:
            return sum(seen.values())

        await wait_for(taken, until=lambda n: n >= ready, within=60, what="the queue drained")
    finally:
        await q.cancel(tag)
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
    # lands, and more written while the broker is down: they must wait it out.
    ids = await _write_rows(sessions, target, RESTART_ROWS)
    relay = RelayProcess(settings, "through-broker-restart")
    relays.append(relay)
    await relay.until_readiness(200)
    await _until_published(db, ids, at_least=RESTART_ROWS // 20, within=60)
    await _rabbitmqctl("stop_app")
    try:
        ids += await _write_rows(sessions, target, OUTAGE_ROWS)
        await relay.until_readiness(503, naming="rabbitmq")
        assert await _published(db, ids) < len(ids)
    finally:
        await _rabbitmqctl("start_app")
    await _rabbitmqctl("await_startup")

    await _recovered(relay, db, own_broker, target, ids, outage="the broker")


@dataclass(frozen=True)
class PrivateDatabase:
    """This test's database on the run's private PostgreSQL server, migrated."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def private_db(
    settings: Settings, private_postgres: PrivatePostgres
) -> AsyncIterator[PrivateDatabase]:
    """Settings of the run (its broker namespace) on a database of the private server,
    which the test may stop: the machine's shared server is never touched."""
    await asyncio.to_thread(private_postgres.ensure_running)
    url = private_postgres.url(f"sagaway_test_{uuid.uuid4().hex[:10]}")
    own = settings.model_copy(update={"database_url": url})
    await migrate(own)
    engine = create_engine(url)
    try:
        yield PrivateDatabase(own, engine, session_factory(engine))
    finally:
        await engine.dispose()
        await asyncio.to_thread(private_postgres.ensure_running)
        await drop_database(own)


async def test_postgresql_restarted_mid_stream_loses_nothing_and_backs_off(
    private_db: PrivateDatabase,
    private_postgres: PrivatePostgres,
    own_broker: AbstractRobustConnection,
    target: Target,
    relays: list[RelayProcess],
) -> None:
    db = private_db.engine
    ids = await _write_rows(private_db.sessions, target, RESTART_ROWS)
    relay = RelayProcess(private_db.settings, "through-database-restart")
    relays.append(relay)
    await _until_published(db, ids, at_least=RESTART_ROWS // 20, within=60)
    assert await _published(db, ids) < RESTART_ROWS, "the restart came too late"
    await asyncio.to_thread(private_postgres.stop, "fast")
    try:
        await relay.until_readiness(503, naming="postgres")
        # No busy loop: the relay waits longer after each failure. Hold the database
        # down until it has doubled its pause a few times, then count its attempts.
        await wait_for(
            lambda: asyncio.to_thread(relay.backoffs, DB_BACKOFF),
            until=lambda delays: any(d >= 0.8 for d in delays),
            within=60,
            interval=0.2,
            what="the relay backing off to 0.8 s",
        )
        delays = relay.backoffs(DB_BACKOFF)
    finally:
        await asyncio.to_thread(private_postgres.start)
    # Each of its loops tried about once per doubling: a handful of attempts, not
    # thousands, and never faster than the first pause.
    assert len(delays) <= 30, delays
    assert min(delays) >= 0.05, delays
    # The pool's connections died with the server; later checkouts open new ones.
    await db.dispose()

    await _recovered(relay, db, own_broker, target, ids, outage="the database")


async def _recovered(
    relay: RelayProcess,
    db: AsyncEngine,
    broker: AbstractRobustConnection,
    target: Target,
    ids: list[uuid.UUID],
    *,
    outage: str,
) -> None:
    """After ``outage``: the same relay publishes every row, is ready again, and every
    message arrived (repeats only of a message_id)."""
    await _until_published(db, ids, at_least=len(ids), within=180)
    await relay.until_readiness(200)
    assert relay.process.poll() is None, f"the relay died with {outage}"
    await _assert_all_arrived_once_or_repeated(broker, target, ids)


async def test_a_broker_resource_alarm_holds_rows_back_until_it_clears(
    settings: Settings,
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    own_broker: AbstractRobustConnection,
    target: Target,
    relays: list[RelayProcess],
) -> None:
    # RabbitMQ blocks publishing connections while a memory alarm is on; the relay's
    # publishes must give up at their timeout instead of hanging, and say why.
    relay = RelayProcess(settings, "through-alarm", SAGAWAY_PUBLISH_TIMEOUT_S="2")
    relays.append(relay)
    await relay.until_readiness(200)
    watermark = await _rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    await _rabbitmqctl("set_vm_memory_high_watermark", "0")
    try:
        ids = await _write_rows(sessions, target, ALARM_ROWS)
        await relay.until_readiness(503, naming="rabbitmq")
        _, body = await relay.readiness()
        assert "blocked by a resource alarm" in body["detail"], body
        assert await _published(db, ids) < ALARM_ROWS
    finally:
        await _rabbitmqctl("set_vm_memory_high_watermark", watermark.strip() or "0.4")

    await _recovered(relay, db, own_broker, target, ids, outage="the alarm")


async def _rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {err.decode()}"
    return out.decode()
