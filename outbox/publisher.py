"""Publishing with publisher confirms: the only code that writes to the broker."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from outbox.errors import BrokerUnavailable, PublishFailed
from outbox.tracing import TRACEPARENT

MISSING_EXCHANGE_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One outbox row ready to publish (``traceparent``: the W3C trace context of the
    transaction that wrote it, sent as an AMQP header)."""

    message_id: str
    message_type: str
    correlation_id: str | None
    exchange: str
    routing_key: str
    body: bytes
    traceparent: str | None = None


class Publisher(Protocol):
    """Publishes one message and returns only once the broker confirmed it."""

    async def publish(self, message: RawMessage) -> None:
        """Raises PublishFailed for this message, BrokerUnavailable for the link."""
        ...


class AioPikaPublisher:
    """Publisher on an aio-pika channel with confirms and ``mandatory`` set.

    Every publish waits for its confirm, bounded by ``timeout_s``; many run at once on
    the one channel, so a batch costs about one confirm round trip.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        timeout_s: float,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._connection = connection
        self._timeout_s = timeout_s
        self._max_bytes = max_message_bytes
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._missing: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def publish(self, message: RawMessage) -> None:
        """Publish persistently and wait for the confirm."""
        if len(message.body) > self._max_bytes:
            raise PublishFailed(
                f"message of {len(message.body)} bytes exceeds the {self._max_bytes}-byte limit"
            )
        try:
            exchange = await self._exchange(message.exchange)
            await exchange.publish(
                aio_pika.Message(
                    body=message.body,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    type=message.message_type,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={TRACEPARENT: message.traceparent} if message.traceparent else None,
                ),
                routing_key=message.routing_key,
                mandatory=True,
                timeout=self._timeout_s,
            )
        except aio_pika.exceptions.DeliveryError as exc:
            raise PublishFailed(f"broker refused message: {_describe(exc)}") from exc
        except TimeoutError as exc:
            raise PublishFailed("no confirm before the publish timeout") from exc
        except (
            # aio-pika raises a bare RuntimeError for a channel on a connection that is
            # closed or still reconnecting.
            RuntimeError,
            aio_pika.exceptions.AMQPConnectionError,
            aio_pika.exceptions.ChannelInvalidStateError,
            aiormq.exceptions.ChannelClosed,
            ConnectionError,
            OSError,
        ) as exc:
            self._channel = None
            raise BrokerUnavailable(f"broker link lost: {type(exc).__name__}") from exc

    async def _exchange(self, name: str) -> AbstractExchange:
        """The exchange handle, checked once per channel to exist.

        Publishing to an exchange that does not exist makes the broker close the whole
        channel, failing every publish in flight; checking first turns a missing
        exchange into a failure of the messages addressed to it alone.
        """
        missing_since = self._missing.get(name)
        if missing_since is not None and time.monotonic() - missing_since < MISSING_EXCHANGE_TTL_S:
            raise PublishFailed(f"exchange {name!r} does not exist")
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                # on_return_raises: a mandatory message the broker cannot route comes
                # back as an error on its confirm instead of silently vanishing.
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                self._exchanges.clear()
            exchange = self._exchanges.get(name)
            if exchange is None:
                try:
                    exchange = await self._channel.get_exchange(name, ensure=True)
                except aiormq.exceptions.ChannelNotFoundEntity as exc:
                    self._missing[name] = time.monotonic()
                    self._channel = None
                    raise PublishFailed(f"exchange {name!r} does not exist") from exc
                self._missing.pop(name, None)
                self._exchanges[name] = exchange
            return exchange


def _describe(exc: aio_pika.exceptions.DeliveryError) -> str:
    frame = getattr(exc, "frame", None)
    reply_text = getattr(frame, "reply_text", None)
    return str(reply_text) if reply_text else type(exc).__name__
