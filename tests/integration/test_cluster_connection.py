"""``outbox.cluster_connection``: a connection that fails over between nodes.

The aio-pika internals it relies on are checked here with real links: each "node" is a
TCP proxy to the machine's RabbitMQ that the test cuts, as a node that dies would drop
its connections and refuse new ones. (tests/e2e/test_rabbit_cluster.py does the same on
a real three-node cluster.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from sagaway.outbox.amqp import connect
from sagaway.outbox.broker_nodes import node_address
from sagaway.outbox.cluster_connection import ClusterConnection, check_internals
from sagaway.outbox.errors import BrokerUnavailable
from sagaway.outbox.settings import Settings
from tests.support import free_port, wait_for
from tests.tcp_proxy import TcpProxy


def _via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by 127.0.0.1:``port``."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def proxies(settings: Settings) -> AsyncIterator[list[TcpProxy]]:
    """Two accepting proxies to the broker (more with ``proxies.append``)."""
    target = urlsplit(settings.amqp_nodes[0])
    made = [TcpProxy(target.hostname or "127.0.0.1", target.port or 5672) for _ in range(2)]
    for proxy in made:
        await proxy.resume()
    yield made
    for proxy in made:
        await proxy.cut()


@pytest.fixture
async def queue_name(settings: Settings) -> AsyncIterator[str]:
    """A queue of the test's own, deleted afterwards."""
    name = f"{settings.namespace}.failover-{uuid.uuid4().hex[:8]}"
    yield name
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
    finally:
        await connection.close()


async def _consume(connection: ClusterConnection, queue: str) -> asyncio.Queue[bytes]:
    """Declare ``queue`` and consume it as components do; the bodies delivered.

    The queue is declared on a channel closed afterwards, which aio-pika therefore does
    not restore; the consumer's own channel only checks that the queue exists.
    """
    setup = await connection.channel()
    await _declare(setup, queue)
    await setup.close()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        got.put_nowait(message.body)

    channel = await connection.channel()
    declared = await channel.get_queue(queue, ensure=True)
    await declared.consume(on_message)
    return got


async def _publish(settings: Settings, queue: str, body: bytes) -> None:
    """Publish straight to the broker, not through the connection under test."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
    finally:
        await connection.close()


async def _node(connection: ClusterConnection) -> str | None:
    return connection.node


async def _until_on(connection: ClusterConnection, proxy: TcpProxy, what: str) -> None:
    await wait_for(
        lambda: _node(connection),
        until=lambda node: node == f"127.0.0.1:{proxy.port}",
        within=15,
        what=what,
    )


async def _declare(channel: AbstractChannel, queue: str) -> None:
    await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})


def test_the_aio_pika_internals_the_failover_relies_on_are_there() -> None:
    check_internals()


@pytest.mark.timeout(30)
async def test_a_lost_node_fails_over_past_an_unreachable_one_and_the_consumer_carries_on(
    settings: Settings, proxies: list[TcpProxy], queue_name: str
) -> None:
    first, last = proxies
    dead = free_port()
    url = settings.amqp_nodes[0]
    nodes = [_via(url, first.port), _via(url, dead), _via(url, last.port)]
    connection = ClusterConnection(nodes, redeclare=lambda ch: _declare(ch, queue_name))
    await connection.connect(timeout=5)
    try:
        check_internals(connection)
        assert connection.node == f"127.0.0.1:{first.port}"
        got = await _consume(connection, queue_name)
        await _publish(settings, queue_name, b"before")
        assert await asyncio.wait_for(got.get(), 10) == b"before"

        # The node dies: its link drops; the next node refuses; the one after takes over.
        await first.cut()
        await _until_on(connection, last, "failover to the third node")
        await _publish(settings, queue_name, b"after")
        assert await asyncio.wait_for(got.get(), 10) == b"after"
    finally:
        await connection.close()


@pytest.mark.timeout(30)
async def test_a_cluster_that_comes_back_without_the_queue_gets_it_declared_again(
    settings: Settings, proxies: list[TcpProxy], queue_name: str
) -> None:
    first, last = proxies
    url = settings.amqp_nodes[0]
    connection = ClusterConnection(
        [_via(url, first.port), _via(url, last.port)],
        redeclare=lambda ch: _declare(ch, queue_name),
    )
    await connection.connect(timeout=5)
    try:
        got = await _consume(connection, queue_name)

        # Every node down; meanwhile the queue disappears (a cluster rebuilt empty).
        await first.cut()
        await last.cut()
        await wait_for(lambda: _node(connection), until=lambda n: n is None, what="link lost")
        direct = await aio_pika.connect(settings.amqp_url)
        await (await direct.channel()).queue_delete(queue_name)
        await direct.close()

        await last.resume()
        await _until_on(connection, last, "reconnected to the node that came back")
        # The consumer was restored on the queue declared again, not left behind.
        await _publish(settings, queue_name, b"again")
        assert await asyncio.wait_for(got.get(), 10) == b"again"
    finally:
        await connection.close()


@pytest.mark.timeout(30)
async def test_connect_reaches_whichever_node_answers_and_names_every_one_that_did_not(
    settings: Settings,
) -> None:
    url = settings.amqp_nodes[0]
    dead = _via(url, free_port())
    for _ in range(3):  # the order is shuffled per connection
        connection = await connect(f"{dead},{url}", name="failover-test")
        try:
            assert connection.node == node_address(url)
        finally:
            await connection.close()

    other = _via(url, free_port())
    with pytest.raises(BrokerUnavailable) as refused:
        await connect(f"{dead},{other}", name="failover-test")
    message = str(refused.value)
    assert node_address(dead) in message and node_address(other) in message, message
    password = urlsplit(url).password
    assert not password or password not in message
