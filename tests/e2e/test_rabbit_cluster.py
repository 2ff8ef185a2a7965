"""sagaway on a RabbitMQ cluster of three nodes that loses nodes under load.

The cluster is the tests' own (``tests/rabbit_cluster.py``): three extra nodes of this
machine's installation, with quorum queues. Each test runs an installation of its own
(database and namespace) as ``sagaway up`` does, an API process and a backend process,
with ``SAGAWAY_AMQP_URL`` listing the three nodes. A saga's step deadline is far beyond
the test, so a saga ends only if none of its messages was lost: a deadline never re-sends
what a fault dropped. The cluster, and the queues on it, go when the run ends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.bench.invariants import find_problems
from sagaway.bench.workload import BenchTally, RunScope, Workload, WorkloadOptions
from sagaway.migrate import migrate
from sagaway.orchestrator.tables import sagas
from sagaway.outbox.amqp import declare, message_count
from sagaway.outbox.cluster_connection import ClusterConnection
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.errors import BrokerUnavailable
from sagaway.outbox.publisher import AioPikaPublisher, PublishResult, RawMessage
from sagaway.outbox.settings import Settings
from sagaway.wiring import build_topology
from tests.e2e.conftest import System
from tests.rabbit_cluster import RabbitCluster, RabbitNode
from tests.support import (
    ADMIN_TOKEN,
    OUTBOX_TABLES,
    drop_database,
    free_port,
    isolated_settings,
    new_run_id,
    wait_for,
)

# The first test also waits for the cluster to be made (a minute at most here).
TEST_S = 300
START_S = 60.0
# How long a saga may take, POST to terminal, while nodes are lost and restarted.
SAGA_S = 240.0


@dataclass
class Installation:
    """A database and a namespace of one test, on the cluster, and its processes."""

    settings: Settings
    system: System
    engine: AsyncEngine
    side_url: str = ""

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions on the installation's database."""
        return session_factory(self.engine)


@pytest.fixture
async def installation(cluster: RabbitCluster) -> AsyncIterator[Installation]:
    """A migrated database and a namespace whose broker is the cluster's three nodes."""
    settings = isolated_settings(
        f"{new_run_id()}q{uuid.uuid4().hex[:6]}", amqp_url=cluster.amqp_url, step_timeout_s=300.0
    )
    engine = create_engine(settings.database_url)
    system = System(settings=settings, api_url=f"http://127.0.0.1:{free_port()}")
    try:
        await migrate(settings)
        yield Installation(settings=settings, system=system, engine=engine)
    finally:
        await asyncio.to_thread(system.stop_all)
        await engine.dispose()
        await drop_database(settings)


# --- the installation's pieces -----------------------------------------------------------


async def _declare_through(
    cluster: RabbitCluster, node: RabbitNode, settings: Settings
) -> list[dict[str, Any]]:
    """Declare the topology through ``node`` only, so that every queue's leader is there
    (RabbitMQ puts a new quorum queue's leader on the declaring client's node)."""
    connection = await aio_pika.connect(node.url)
    try:
        await declare(await connection.channel(), build_topology(settings))
    finally:
        await connection.close()
    queues = await cluster.queues(f"{settings.namespace}.")
    names = {n.name for n in cluster.nodes}
    # Four queues and their dead-letter queues, each a quorum queue with a member on
    # every node: RabbitMQ 3.10's default initial group size is quorum_cluster_size
    # (3), capped by the cluster's size.
    assert len(queues) == 8, queues
    assert all(q["type"] == "quorum" for q in queues), queues
    assert all(set(q["members"]) == names for q in queues), queues
    return queues


async def _start(installation: Installation) -> None:
    """Start the API and the backend (with its probe port) and wait until both are ready."""
    system = installation.system
    side = free_port()
    installation.side_url = f"http://127.0.0.1:{side}"
    system.start("api", "api", "--port", system.api_url.rsplit(":", 1)[1])
    system.start("backend", "backend", env={"SAGAWAY_METRICS_PORT": str(side)})
    await _until_both_ready(installation, lambda r: r[0] == 200, "200")


async def _until_both_ready(
    installation: Installation, until: Callable[[tuple[int, dict[str, Any]]], bool], what: str
) -> None:
    """Until the ``/readyz`` of the API and of the backend both answer as ``until`` says."""
    for url in (installation.system.api_url, installation.side_url):
        await wait_for(
            lambda url=url: _readyz(url),  # type: ignore[misc]
            until=until,
            within=START_S,
            interval=0.2,
            what=f"{url}/readyz {what}",
        )


async def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{base}/readyz")
    except httpx.TransportError:
        return 0, {}
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def _ended(installation: Installation) -> int:
    async with installation.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(sagas)
            .where(sagas.c.status.in_(["COMPLETED", "COMPENSATED", "FAILED"]))
        )
        return int(count or 0)


async def _until_ended(installation: Installation, count: int, what: str) -> None:
    await wait_for(
        lambda: _ended(installation),
        until=lambda n: n >= count,
        within=SAGA_S,
        interval=0.2,
        what=what,
    )


async def _until_on_a_live_node(
    installation: Installation, cluster: RabbitCluster, down: list[RabbitNode]
) -> None:
    """Until both processes' ``/readyz`` answer 200 naming a node that is up."""
    live = {n.address for n in cluster.nodes if n not in down}
    await _until_both_ready(
        installation,
        lambda r: r[0] == 200 and r[1].get("rabbitmq_node") in live,
        f"200 on one of {sorted(live)}",
    )


def _workload(installation: Installation, sagas: int) -> Workload:
    # Every 10th order is refused by payment after its reservation: compensated.
    return Workload(
        installation.system.api_url,
        WorkloadOptions(
            sagas=sagas,
            concurrency=20,
            admin_token=ADMIN_TOKEN,
            timeout_s=SAGA_S,
            reject_every=10,
            reject_kind="credit",
        ),
    )


async def _assert_all_well(
    installation: Installation, tally: BenchTally, scope: RunScope, sagas: int
) -> None:
    """Every saga ended as its order meant, nothing lost or doubled, nobody restarted."""
    outcomes = {status: len(times) for status, times in tally.terminal_ms.items()}
    assert (tally.timeouts, dict(tally.http_errors)) == (0, {}), (tally.timeouts, tally.http_errors)
    assert outcomes == {"COMPLETED": sagas - sagas // 10, "COMPENSATED": sagas // 10}, outcomes
    problems = await find_problems(
        installation.sessions, stock_totals=scope.stock_totals, customers_used=scope.customers
    )
    assert not problems, "invariants broken:\n  " + "\n  ".join(problems)
    async with installation.sessions() as session:
        retried = await session.scalar(
            text(
                "SELECT count(*) FROM sagas.sagas, jsonb_array_elements(steps) AS step"
                " WHERE (step ->> 'attempts')::int > 1"
            )
        )
        left = {
            name: await session.scalar(
                select(func.count())
                .select_from(table)
                .where(table.c.published_at.is_(None) | table.c.dead_at.is_not(None))
            )
            for name, table in OUTBOX_TABLES.items()
        }
    # Every message went through on its first attempt: none had to be sent again by a
    # deadline, every outbox row is published and none was given up on.
    assert retried == 0
    assert set(left.values()) == {0}, left
    await _assert_no_dead_letters(installation.settings)
    exited = {n: p.poll() for n, p in installation.system.processes.items() if p.poll() is not None}
    assert not exited, f"processes exited: {exited}"


async def _assert_no_dead_letters(settings: Settings) -> None:
    topology = build_topology(settings)
    connection = await aio_pika.connect(settings.amqp_nodes[0])
    try:
        channel = await connection.channel()
        dead = {
            q.name: await message_count(channel, topology.dead_letter_queue(q.name))
            for q in topology.queues
        }
    finally:
        await connection.close()
    assert set(dead.values()) == {0}, dead


async def _run_through(
    installation: Installation, sagas: int, fault: Any
) -> tuple[BenchTally, RunScope]:
    """Run ``sagas`` orders and, meanwhile, ``fault()``; what the workload recorded."""
    async with _workload(installation, sagas) as workload:
        run = asyncio.create_task(workload.run())
        try:
            await fault()
            tally = await run
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        return tally, workload.scope


async def _now(value: Any) -> Any:
    """``value`` as a probe for ``wait_for`` (read anew at each call of the lambda)."""
    return value


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.timeout(TEST_S)
@pytest.mark.parametrize(("lost_by", "sagas"), [("kill -9", 300), ("clean stop", 200)])
async def test_the_node_leading_every_queue_lost_mid_run_and_brought_back_loses_nothing(
    cluster: RabbitCluster, installation: Installation, lost_by: str, sagas: int
) -> None:
    leader = cluster.nodes[0 if lost_by == "kill -9" else 1]
    queues = await _declare_through(cluster, leader, installation.settings)
    assert {q["leader"] for q in queues} == {leader.name}
    await _start(installation)
    await _until_on_a_live_node(installation, cluster, down=[])
    some = sagas // 5

    async def fault() -> None:
        await _until_ended(installation, some, f"{some} sagas ended before the {lost_by}")
        # Counted as the loss begins: a clean stop hands the queues over while it runs,
        # and on a slow machine the rest of the run may end before it returns.
        at_loss = await _ended(installation)
        await (cluster.kill(leader) if lost_by == "kill -9" else cluster.stop(leader))
        # The installation carries on without the node: through another node, to the
        # leaders the survivors elected, with what the lost node had delivered back.
        await _until_on_a_live_node(installation, cluster, down=[leader])
        await _until_ended(installation, at_loss + some, f"{some} more ended without the node")
        moved = await cluster.queues(f"{installation.settings.namespace}.")
        assert leader.name not in {q["leader"] for q in moved}, moved
        await cluster.start(leader)

    tally, scope = await _run_through(installation, sagas, fault)
    await _assert_all_well(installation, tally, scope, sagas)


@pytest.mark.timeout(TEST_S)
@pytest.mark.parametrize("lost_by", ["kill -9", "clean stop"])
async def test_the_whole_cluster_lost_at_once_mid_run_and_restarted_every_saga_still_ends(
    cluster: RabbitCluster, installation: Installation, lost_by: str
) -> None:
    await _declare_through(cluster, cluster.nodes[2], installation.settings)
    await _start(installation)
    sagas = 200

    async def fault() -> None:
        await _until_ended(installation, 40, "40 sagas ended before the restart")
        if lost_by == "kill -9":
            # A power cut: what the cluster confirmed was on disk on a majority of nodes.
            await cluster.kill(*cluster.nodes)
        else:
            # A maintenance restart: every node shut down in order, then all started.
            await cluster.stop(*cluster.nodes)
        # Nothing to connect to: both processes say so, and name no node.
        await _until_both_ready(
            installation,
            lambda r: (
                r[0] == 503 and r[1].get("rabbitmq") == "down" and r[1]["rabbitmq_node"] is None
            ),
            "503 naming rabbitmq, on no node",
        )
        await cluster.start(*cluster.nodes)
        await cluster.wait_clustered()
        await _until_on_a_live_node(installation, cluster, down=[])

    tally, scope = await _run_through(installation, sagas, fault)
    await _assert_all_well(installation, tally, scope, sagas)


@pytest.mark.timeout(TEST_S)
async def test_a_node_lost_under_a_publisher_and_a_consumer_loses_no_confirmed_message(
    cluster: RabbitCluster, settings: Settings
) -> None:
    """Publishes in flight when their node dies are reported not confirmed; every one
    confirmed is delivered; the consumer's unacknowledged deliveries come back."""
    doomed = cluster.nodes[0]
    namespace = f"{settings.namespace}.links-{uuid.uuid4().hex[:6]}"
    exchange, queue = f"{namespace}.x", f"{namespace}.q"
    setup = await aio_pika.connect(doomed.url)
    channel = await setup.channel()
    declared = await channel.declare_queue(
        queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await declared.bind(await channel.declare_exchange(exchange, durable=True), routing_key="k")
    await setup.close()
    # Both links on the node that dies (leader of the queue), failing over to the others.
    publishing = ClusterConnection([n.url for n in cluster.nodes])
    consuming = ClusterConnection([n.url for n in cluster.nodes])
    await publishing.connect(timeout=10)
    await consuming.connect(timeout=10)
    try:
        held: list[aio_pika.abc.AbstractIncomingMessage] = []
        received: dict[str, bool] = {}
        acking = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received[str(message.message_id)] = message.redelivered or received.get(
                str(message.message_id), False
            )
            if acking.is_set():
                await message.ack()
            else:
                held.append(message)

        consumer_channel = await consuming.channel()
        await consumer_channel.set_qos(prefetch_count=50)
        await (await consumer_channel.get_queue(queue, ensure=True)).consume(on_message)

        publisher = AioPikaPublisher(publishing, timeout_s=10)
        results: dict[str, PublishResult] = {}
        stop = asyncio.Event()

        async def publish() -> None:
            n = 0
            while not stop.is_set():
                batch = [
                    RawMessage(
                        message_id=f"m-{n + i}",
                        message_type="Test",
                        correlation_id=None,
                        exchange=exchange,
                        routing_key="k",
                        body=b"{}",
                    )
                    for i in range(200)
                ]
                n += len(batch)
                settled = await publisher.publish_batch(batch)
                for message, result in zip(batch, settled, strict=True):
                    results[message.message_id] = result
                if any(isinstance(r, BrokerUnavailable) for r in settled):
                    # As the relay does: back off while no node takes messages (a
                    # publish then fails at once, and a tight loop starves the rest).
                    await asyncio.sleep(0.05)

        publisher_task = asyncio.create_task(publish())
        try:
            await wait_for(
                lambda: _now(len(held)),
                until=lambda n: n == 50,
                what="the consumer holding a full prefetch, unacknowledged",
            )
            await wait_for(lambda: _now(len(results)), until=lambda n: n >= 2000, what="publishes")
            before = {str(m.message_id) for m in held}
            await cluster.kill(doomed)
            acking.set()
            await wait_for(
                lambda: _now((publishing.node, consuming.node)),
                until=lambda nodes: all(n not in (None, doomed.address) for n in nodes),
                within=START_S,
                what="both links on a surviving node",
            )
            at_failover = len(results)
            await wait_for(
                lambda: _now(len(results)),
                until=lambda n: n >= at_failover + 2000,
                within=START_S,
                what="publishing on after the failover",
            )
        finally:
            stop.set()
            await publisher_task
        confirmed = {m for m, r in results.items() if r is None}
        # The loss surfaced as publishes not confirmed, which the relay keeps for a
        # retry: the link's loss under them, or a nack from a queue whose leader died.
        not_confirmed = Counter(str(r) for r in results.values() if r is not None)
        assert not_confirmed, "no publish was in flight when the node died"
        # Every confirmed message is in the queue (some unconfirmed ones may be too).
        await wait_for(
            lambda: _now(confirmed - received.keys()),
            until=lambda missing: not missing,
            within=START_S,
            what="every confirmed message delivered",
        )
        # What the consumer held unacknowledged when its node died came back.
        assert all(received[m] for m in before), [m for m in before if not received[m]]
    finally:
        await publishing.close()
        await consuming.close()
