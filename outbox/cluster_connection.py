"""The one module that reaches into aio-pika's robust connection: failing over between nodes.

aio-pika's ``RobustConnection`` reconnects by itself, restoring its channels, their QoS,
declarations, bindings and consumers, but always to the one URL it was made with. A
``ClusterConnection`` is that connection over the nodes of one RabbitMQ cluster: each
time its link closes, whether an open link was lost or an attempt to open one failed,
it moves on to the next node, so the reconnect aio-pika makes next goes there.

What this relies on (aio-pika 10.2; ``check_internals`` asserts each one, and
tests/integration/test_cluster_connection.py fails a real connection over with them):

* ``RobustConnection._on_connection_close(closing)``: awaited whenever the link closes,
  also when an attempt to open it fails, before the reconnect loop tries again;
* ``Connection.url``: what the next attempt (``Connection.connect``) connects to;
* ``RobustConnection.reconnect_interval``: the pause the reconnect loop takes after an
  attempt, read anew each time;
* ``RobustConnection._on_connected()``: awaited once a link is open, before the channels
  are restored (an error there closes the link and the loop tries again).

No upstream API does this yet: a robust connection that takes several URLs (or a hook
asked for the next URL before each attempt) would replace this module.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aio_pika import Channel, RobustConnection
from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable
from yarl import URL

from sagaway.outbox.broker_nodes import node_address

log = structlog.get_logger(__name__)

# After an attempt fails, the next node is tried at once (a short pause only keeps a
# misbehaving node from spinning the loop); once every node has failed in a row, the
# loop waits this long before the next round.
NEXT_NODE_PAUSE_S = 0.1
ROUND_PAUSE_S = 2.0

Redeclare = Callable[[AbstractChannel], Awaitable[None]]
"""Declares what a component needs, on a channel of a link that was just reopened."""


class AioPikaInternalsChanged(TypeError):
    """The installed aio-pika lacks a robust-connection internal failing over relies on."""


def check_internals(connection: RobustConnection | None = None) -> None:
    """Raise ``AioPikaInternalsChanged`` naming the first internal that is gone.

    Args:
        connection: also check the instance attributes of this connection.
    """
    for hook in ("_on_connection_close", "_on_connected"):
        if not inspect.iscoroutinefunction(getattr(RobustConnection, hook, None)):
            raise AioPikaInternalsChanged(
                f"RobustConnection.{hook} is no longer a coroutine method: a connection "
                "could no longer move to another node (see outbox/cluster_connection.py)"
            )
    if connection is not None:
        for attribute, kind in (("url", URL), ("reconnect_interval", (int, float))):
            if not isinstance(getattr(connection, attribute, None), kind):
                raise AioPikaInternalsChanged(
                    f"RobustConnection.{attribute} is gone or changed type "
                    "(see outbox/cluster_connection.py)"
                )


class ClusterConnection(RobustConnection):
    """A robust connection to whichever node of a RabbitMQ cluster it can reach.

    It connects to ``nodes[0]``; when that link is lost, or an attempt fails, it tries
    the next node, round and round, pausing ``ROUND_PAUSE_S`` only after every node failed
    in a row. Once a link is open again aio-pika restores the channels on it; before
    that, ``redeclare`` (if given) declares what the component needs, in case the
    cluster came back without it.

    Args:
        nodes: URLs of the cluster's nodes, in the order to try them.
        client_properties: sent to the broker (``connection_name`` shows in its tools).
        redeclare: run on a temporary channel each time a link is reopened.
    """

    def __init__(
        self,
        nodes: Sequence[str],
        *,
        client_properties: FieldTable | None = None,
        redeclare: Redeclare | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a cluster connection needs at least one node")
        self._nodes = tuple(URL(n) for n in nodes)
        self._addresses = tuple(node_address(n) for n in nodes)
        self._at = 0
        self._failed_in_row = 0
        self._opened_before = False
        self._redeclare = redeclare
        super().__init__(
            self._nodes[0], client_properties=client_properties, reconnect_interval=ROUND_PAUSE_S
        )
        check_internals(self)

    @property
    def node(self) -> str | None:
        """``host:port`` of the node the link is open to; None while there is none."""
        return self._addresses[self._at] if self.connected.is_set() else None

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not (self._close_called or self.is_closed):
            # Move on before aio-pika wakes its reconnect loop, so that the loop's next
            # attempt, whenever it comes, goes to the next node.
            lost = self.connected.is_set()
            left = self._addresses[self._at]
            self._failed_in_row = 0 if lost else self._failed_in_row + 1
            self._at = (self._at + 1) % len(self._nodes)
            self.url = self._nodes[self._at]
            round_failed = self._failed_in_row > 0 and self._failed_in_row % len(self._nodes) == 0
            self.reconnect_interval = ROUND_PAUSE_S if round_failed else NEXT_NODE_PAUSE_S
            following = self._addresses[self._at]
            if lost:
                log.warning("rabbitmq node lost", node=left, next_node=following)
            else:
                # aio-pika itself warns of each failed attempt.
                log.debug("rabbitmq node unreachable", node=left, next_node=following)
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        if self._opened_before and self._redeclare is not None:
            try:
                async with Channel(self) as channel:
                    await self._redeclare(channel)
            except Exception as exc:
                # As aio-pika does when restoring fails: close the link, and its loop
                # tries again (the next node) after its pause.
                transport = self.transport
                if transport is not None:
                    await asyncio.gather(transport.connection.close(exc), return_exceptions=True)
                raise
        await super()._on_connected()
        self._failed_in_row = 0
        self.reconnect_interval = NEXT_NODE_PAUSE_S
        if self._opened_before:
            log.info("reconnected to rabbitmq", node=self._addresses[self._at])
        self._opened_before = True
