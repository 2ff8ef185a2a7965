"""RabbitMQ connection and topology: durable exchanges, quorum queues, dead letters."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from sagaway.outbox.broker_nodes import node_address, parse_nodes
from sagaway.outbox.cluster_connection import ClusterConnection, Redeclare
from sagaway.outbox.errors import BrokerUnavailable

# How long one attempt to open a link to a node may take: a node that does not answer
# (a host down, packets dropped) must not hold a component back from the next one.
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueSpec:
    """A durable queue bound to one exchange by some routing keys."""

    name: str
    exchange: str
    routing_keys: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Topology:
    """Everything a sagaway installation declares on the broker.

    Every component declares the whole topology when it starts, so the relay never
    publishes to a queue that does not exist yet (a message for a participant whose
    worker is down waits in its queue instead of being returned).
    """

    exchanges: tuple[str, ...]
    queues: tuple[QueueSpec, ...]
    dead_letter_exchange: str
    queue_type: Literal["quorum", "classic"] = "quorum"
    delivery_limit: int = 5
    extra_queue_arguments: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def dead_letter_queue(queue: str) -> str:
        """Name of the queue holding what ``queue`` dead-lettered."""
        return f"{queue}.dead"


async def connect(
    amqp_url: str, *, name: str, redeclare: Redeclare | None = None
) -> ClusterConnection:
    """Open a connection to a reachable node that fails over to the others by itself.

    Args:
        amqp_url: ``SAGAWAY_AMQP_URL``: one node's URL, or the nodes of one cluster
            separated by commas.
        name: the connection's name in RabbitMQ's tools.
        redeclare: what to declare again whenever the link is reopened.

    Raises:
        BrokerUnavailable: no node accepted the connection (each one's error is named).
    """
    nodes = list(parse_nodes(amqp_url))
    # Each connection takes the nodes in an order of its own: an installation's
    # connections spread over the cluster instead of all landing on the first node, and
    # when a node is lost its connections fail over to different survivors.
    random.shuffle(nodes)
    failures: list[str] = []
    for start in range(len(nodes)):
        connection = ClusterConnection(
            nodes[start:] + nodes[:start],
            client_properties={"connection_name": name},
            redeclare=redeclare,
        )
        try:
            await connection.connect(timeout=CONNECT_TIMEOUT_S)
        except CONNECTION_EXCEPTIONS as exc:
            # Type names only: a driver's message can carry the URL.
            failures.append(f"{node_address(nodes[start])}: {type(exc).__name__}")
            await connection.close()
            continue
        return connection
    raise BrokerUnavailable("cannot connect to RabbitMQ: " + "; ".join(failures))


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange and queue (idempotent, safe from many processes)."""
    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    for name in topology.exchanges:
        await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, durable=True)
    for spec in topology.queues:
        arguments: dict[str, Any] = {
            "x-queue-type": topology.queue_type,
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-routing-key": spec.name,
            **topology.extra_queue_arguments,
        }
        if topology.queue_type == "quorum":
            # The broker counts deliveries and dead-letters a message that keeps
            # failing, so a poison message can never loop forever.
            arguments["x-delivery-limit"] = topology.delivery_limit
        queue = await channel.declare_queue(spec.name, durable=True, arguments=arguments)
        for key in spec.routing_keys:
            await queue.bind(spec.exchange, routing_key=key)
        dead = await channel.declare_queue(
            topology.dead_letter_queue(spec.name),
            durable=True,
            arguments={"x-queue-type": topology.queue_type},
        )
        await dead.bind(dlx, routing_key=spec.name)


async def message_count(channel: AbstractChannel, queue: str) -> int:
    """Messages ready in ``queue`` right now.

    Asks the broker with a raw passive declare: aio-pika's robust channels remember
    their declarations and would answer with the count of the first one.
    """
    underlay = await channel.get_underlay_channel()
    result = await underlay.queue_declare(queue, passive=True)
    return int(result.message_count or 0)
