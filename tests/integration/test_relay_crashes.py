"""The relay under crashes: killed mid-stream, RabbitMQ and PostgreSQL restarted mid-stream.

Nothing here stops or reconfigures the machine's shared servers, which other test runs
and benchmarks use at the same time. PostgreSQL is stopped on the run's private server
(``private_postgres``). The tests that stop RabbitMQ or raise a resource alarm on it do
so on one node of the run's own cluster (``tests/rabbit_cluster.py``): the relay and the
test's queue are given that node's URL only, so to the relay that node is the broker.

A real ``sagaway relay`` process drains rows written to the orchestrator's outbox and
addressed to a queue of this test; whatever happens, every message arrives, and a
message arrives more than once only as a repeat of the same ``message_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.migrate import migrate
from sagaway.orchestrator.tables import outbox
from sagaway.outbox.amqp import QueueSpec, Topology, declare, message_count
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.settings import Settings
from sagaway.outbox.writer import OutboxWriter
from tests.private_postgres import PrivatePostgres
from tests.rabbit_cluster import RabbitCluster, RabbitNode
from tests.support import drop_database, free_port, wait_for

ROWS = 3000
RESTART_ROWS = 15000
OUTAGE_ROWS = 500
ALARM_ROWS = 2000
DB_BACKOFF = "database unavailable, relay backing off"
LOGS = Path(__file__).resolve().parents[1] / "artifacts" / "relay-crash-logs"
# The tests on the run's cluster may also wait for it to be made (a minute here).
NODE_TEST_S = 300


@dataclass(frozen=True, slots=True)
class Target:
    """An exchange and a queue of one test, on the broker ``settings.amqp_url`` names."""

    settings: Settings
    exchange: str
    queue: str


@contextlib.asynccontextmanager
async def _target_on(settings: Settings) -> AsyncIterator[Target]:
    """Declare a target on ``settings``' broker; delete it (and its dead letters) after.

    Each on a connection of its own: a test may have stopped the broker in between.
    """
    prefix = f"{settings.namespace}.crash-{uuid.uuid4().hex[:6]}"
    topo = Topology(
        exchanges=(f"{prefix}.x",),
        queues=(QueueSpec(name=f"{prefix}.q", exchange=f"{prefix}.x", routing_keys=("k",)),),
        dead_letter_exchange=f"{prefix}.dlx",
        queue_type=settings.queue_type,
    )
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        await declare(await connection.channel(), topo)
    finally:
        await connection.close()
    try:
        yield Target(settings=settings, exchange=topo.exchanges[0], queue=topo.queues[0].name)
    finally:
        connection = await aio_pika.connect(settings.amqp_url)
        try:
            channel = await connection.channel()
            await channel.queue_delete(topo.queues[0].name)
            await channel.queue_delete(topo.dead_letter_queue(topo.queues[0].name))
            await channel.exchange_delete(topo.exchanges[0])
            await channel.exchange_delete(topo.dead_letter_exchange)
        finally:
            await connection.close()


@pytest.fixture
async def target(settings: Settings) -> AsyncIterator[Target]:
    """A target on the machine's broker, for the tests that never stop it."""
    async with _target_on(settings) as made:
        yield made


@pytest.fixture
def own_node(cluster: RabbitCluster) -> RabbitNode:
    """The node of the run's cluster that a test stops or alarms."""
    return cluster.nodes[0]


@pytest.fixture
async def node_target(
    settings: Settings, cluster: RabbitCluster, own_node: RabbitNode
) -> AsyncIterator[Target]:
    """A target whose settings name ``own_node`` as the only broker: the relay has no
    other node to fail over to, so the node's outage is the broker's outage to it.

    Its queue (a quorum queue unless ``SAGAWAY_QUEUE_TYPE`` says otherwise) has members
    on all three nodes: what was confirmed stays on the majority while the node is down.
    """
    own = settings.model_copy(update={"amqp_url": own_node.url})
    async with _target_on(own) as made:
        yield made
        # The target is deleted through the node: a test that failed while the node was
        # down left it stopped (the ``cluster`` fixture would start it only after this).
        if not own_node.running:
            await cluster.start(own_node)


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


async def _received(target: Target, at_least: int) -> Counter[str]:
    """Every message in the target's queue (taken off it), counted by message_id.

    On a connection of its own, opened now: the broker may have been restarted.
    """
    connection = await aio_pika.connect(target.settings.amqp_url)
    try:
        return await _drain(await connection.channel(), target.queue, at_least)
    finally:
        await connection.close()


async def _drain(channel: AbstractChannel, queue: str, at_least: int) -> Counter[str]:
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


async def _assert_all_arrived_once_or_repeated(target: Target, ids: list[uuid.UUID]) -> None:
    seen = await _received(target, len(ids))
    assert set(seen) == {str(i) for i in ids}  # every message arrived, nothing else did
    assert sum(seen.values()) >= len(ids)  # repeats possible, only of the same message_id


async def test_a_relay_killed_mid_stream_loses_nothing_after_restart(
    settings: Settings,
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
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

    await _assert_all_arrived_once_or_repeated(target, ids)


@pytest.mark.timeout(NODE_TEST_S)
async def test_rabbitmq_restarted_mid_stream_loses_nothing(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    cluster: RabbitCluster,
    own_node: RabbitNode,
    node_target: Target,
    relays: list[RelayProcess],
) -> None:
    # Enough rows that the relay is still busy when the (seconds-long) broker stop
    # lands, and more written while the broker is down: they must wait it out.
    ids = await _write_rows(sessions, node_target, RESTART_ROWS)
    relay = RelayProcess(node_target.settings, "through-broker-restart")
    relays.append(relay)
    await relay.until_readiness(200)
    await _until_published(db, ids, at_least=RESTART_ROWS // 20, within=60)
    # A clean stop of the relay's only node (should the test fail while it is down,
    # ``node_target`` and the ``cluster`` fixture start it again).
    await cluster.stop(own_node)
    ids += await _write_rows(sessions, node_target, OUTAGE_ROWS)
    await relay.until_readiness(503, naming="rabbitmq")
    assert await _published(db, ids) < len(ids)
    await cluster.start(own_node)

    await _recovered(relay, db, node_target, ids, outage="the broker")


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

    await _recovered(relay, db, target, ids, outage="the database")


async def _recovered(
    relay: RelayProcess,
    db: AsyncEngine,
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
    await _assert_all_arrived_once_or_repeated(target, ids)


@pytest.mark.timeout(NODE_TEST_S)
async def test_a_broker_resource_alarm_holds_rows_back_until_it_clears(
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    cluster: RabbitCluster,
    own_node: RabbitNode,
    node_target: Target,
    relays: list[RelayProcess],
) -> None:
    # RabbitMQ blocks publishing connections while a memory alarm is on; the relay's
    # publishes must give up at their timeout instead of hanging, and say why.
    relay = RelayProcess(node_target.settings, "through-alarm", SAGAWAY_PUBLISH_TIMEOUT_S="2")
    relays.append(relay)
    await relay.until_readiness(200)
    watermark = await cluster.ctl(
        own_node, "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."
    )
    await cluster.ctl(own_node, "set_vm_memory_high_watermark", "0")
    try:
        ids = await _write_rows(sessions, node_target, ALARM_ROWS)
        await relay.until_readiness(503, naming="rabbitmq")
        _, body = await relay.readiness()
        assert "blocked by a resource alarm" in body["detail"], body
        assert await _published(db, ids) < ALARM_ROWS
    finally:
        await cluster.ctl(own_node, "set_vm_memory_high_watermark", watermark.strip() or "0.4")

    await _recovered(relay, db, node_target, ids, outage="the alarm")
