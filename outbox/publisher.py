"""Publishing with publisher confirms: the only code that writes to the broker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from outbox.errors import BrokerUnavailable, PublishFailed


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One outbox row ready to publish."""

    message_id: str
    message_type: str
    correlation_id: str | None
    exchange: str
    routing_key: str
    body: bytes


class Publisher(Protocol):
    """Publishes one message and returns only once the broker confirmed it."""

    async def publish(self, message: RawMessage) -> None:
        """Raises PublishFailed for this message, BrokerUnavailable for the link."""
        ...


class AioPikaPublisher:
    """Publisher on an aio-pika channel with confirms and ``mandatory`` set."""

    def __init__(self, connection: AbstractRobustConnection, *, timeout_s: float) -> None:
        self._connection = connection
        self._timeout_s = timeout_s
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def _get_channel(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                # on_return_raises: a mandatory message the broker cannot route comes
                # back as an error on its confirm instead of silently vanishing.
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            return self._channel

    async def publish(self, message: RawMessage) -> None:
        """Publish persistently and wait for the confirm (bounded by the timeout)."""
        try:
            channel = await self._get_channel()
            exchange = await channel.get_exchange(message.exchange, ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    body=message.body,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    type=message.message_type,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
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
            raise BrokerUnavailable(f"broker link lost: {type(exc).__name__}") from exc


def _describe(exc: aio_pika.exceptions.DeliveryError) -> str:
    frame = getattr(exc, "frame", None)
    reply_text = getattr(frame, "reply_text", None)
    return str(reply_text) if reply_text else type(exc).__name__
