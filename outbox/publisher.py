"""Publishing with publisher confirms: the only code that writes to the broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from sagaway.outbox.aiormq_adapter import BatchChannel, Publication
from sagaway.outbox.envelope import DEFAULT_MAX_MESSAGE_BYTES
from sagaway.outbox.errors import BrokerUnavailable, PublishFailed
from sagaway.outbox.tracing import TRACEPARENT

MISSING_EXCHANGE_TTL_S = 30.0

# Per message: None when the broker confirmed it, else why it was not.
PublishResult = PublishFailed | BrokerUnavailable | None

# aio-pika raises a bare RuntimeError for a channel on a connection that is closed or
# still reconnecting; the rest are the ways aiormq reports a lost link.
_LINK_ERRORS = (
    RuntimeError,
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
)


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
    """Publishes a batch and returns only once the broker settled every message."""

    async def publish_batch(self, messages: Sequence[RawMessage]) -> list[PublishResult]:
        """One result per message, in order: None once confirmed, PublishFailed for
        the message itself, BrokerUnavailable when the link failed under it."""
        ...


class AioPikaPublisher:
    """Publisher on one channel with confirms and ``mandatory`` set.

    A batch goes out in order on the channel as one write, all of it in flight at
    once, and is settled by one deadline of ``timeout_s``: a batch costs about one
    confirm round trip and little CPU per message (the write itself is
    ``outbox.aiormq_adapter``'s).
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        timeout_s: float,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._connection = connection
        self._timeout_s = timeout_s
        self._max_bytes = max_message_bytes
        self._channel: AbstractChannel | None = None
        self._wire: BatchChannel | None = None
        self._exchanges: set[str] = set()
        self._missing: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def publish_batch(self, messages: Sequence[RawMessage]) -> list[PublishResult]:
        """Publish persistently, in order, and wait for every confirm or the deadline."""
        try:
            refused = await self._check_exchanges({m.exchange for m in messages})
            wire = await self._wire_channel()
        except BrokerUnavailable as exc:
            return [exc] * len(messages)
        results: list[PublishResult] = [None] * len(messages)
        sendable: list[int] = []
        for index, message in enumerate(messages):
            if len(message.body) > self._max_bytes:
                results[index] = PublishFailed(
                    f"message of {len(message.body)} bytes exceeds the {self._max_bytes}-byte limit"
                )
            elif message.exchange in refused:
                results[index] = PublishFailed(f"exchange {message.exchange!r} does not exist")
            else:
                sendable.append(index)
        if not sendable:
            return results
        link = wire.watch_link()
        batch = wire.batch()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        # What a message without a confirm gets, unless the broker is found at fault.
        late: PublishResult = PublishFailed("no confirm before the publish timeout")
        try:
            # Writing is bounded too: a broker that blocks publishers (a memory or
            # disk alarm) or stops reading must not hold the batch, or the relay,
            # forever; ready() waits while RabbitMQ has the connection blocked.
            async with asyncio.timeout_at(deadline):
                await wire.writable()
                await batch.write([_publication(messages[i]) for i in sendable])
            await asyncio.wait(
                (batch.settled, link),
                timeout=max(0.0, deadline - loop.time()),
                return_when=FIRST_COMPLETED,
            )
        except TimeoutError:
            # Not written in time; the channel stays, the broker may just be blocked.
            late = BrokerUnavailable(
                "broker not taking messages (blocked by a resource alarm, or stalled)"
            )
        except _LINK_ERRORS as exc:
            self._channel = None
            late = BrokerUnavailable(_link_lost(exc))
        finally:
            # Reading the exception also keeps asyncio from reporting it as unseen.
            if link.done() and not link.cancelled() and link.exception() is not None:
                self._channel = None
                late = BrokerUnavailable("broker link lost before the confirm")
            link.cancel()
        nacked = False
        for position, index in enumerate(sendable):
            confirmed = position < len(batch.confirms) and batch.confirms[position].done()
            results[index] = _settle(batch.confirms[position]) if confirmed else late
            nacked = nacked or (confirmed and _is_nack(batch.confirms[position]))
        # The channel stays in use: a confirm that comes after all is dropped.
        batch.abandon()
        if nacked:
            await self._reopen_channel()
        return results

    async def _reopen_channel(self) -> None:
        """Close the channel so the next batch opens a new one.

        A quorum queue nacks what its leader cannot take, as when the leader's node was
        lost. A channel remembers the leader it first sent to: one opened while the
        queue was electing a new leader kept sending to the dead one, and every retry
        on it was nacked until that node came back (seen on a 3-node cluster). A new
        channel looks the leader up again.
        """
        async with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*_LINK_ERRORS):
                await channel.close()

    async def _wire_channel(self) -> BatchChannel:
        async with self._lock:
            try:
                if self._channel is None or self._channel.is_closed:
                    # on_return_raises: a mandatory message the broker cannot route
                    # comes back as an error on its confirm instead of vanishing.
                    self._channel = await self._connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    self._exchanges.clear()
                underlay = await self._channel.get_underlay_channel()
            except _LINK_ERRORS as exc:
                self._channel = None
                raise BrokerUnavailable(_link_lost(exc)) from exc
            # A robust channel gets a new underlay when it reopens after a reconnect.
            if self._wire is None or self._wire.underlay is not underlay:
                self._wire = BatchChannel(underlay)
            return self._wire

    async def _check_exchanges(self, names: set[str]) -> set[str]:
        """Which of ``names`` do not exist, checked once per channel.

        Publishing to an exchange that does not exist makes the broker close the whole
        channel, failing every publish in flight; checking before a batch goes out
        turns a missing exchange into a failure of the messages addressed to it alone.
        """
        missing: set[str] = set()
        for name in names - self._exchanges:
            since = self._missing.get(name)
            if since is not None and time.monotonic() - since < MISSING_EXCHANGE_TTL_S:
                missing.add(name)
                continue
            await self._wire_channel()
            async with self._lock:
                assert self._channel is not None
                try:
                    await self._channel.get_exchange(name, ensure=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    self._missing[name] = time.monotonic()
                    missing.add(name)
                    # The failed passive declare closed the channel: open a new one.
                    self._channel = None
                    continue
                except _LINK_ERRORS as exc:
                    self._channel = None
                    raise BrokerUnavailable(_link_lost(exc)) from exc
            self._missing.pop(name, None)
            self._exchanges.add(name)
        return missing


def _publication(message: RawMessage) -> Publication:
    return Publication(
        exchange=message.exchange,
        routing_key=message.routing_key,
        body=message.body,
        message_id=message.message_id,
        message_type=message.message_type,
        correlation_id=message.correlation_id,
        headers={TRACEPARENT: message.traceparent} if message.traceparent else None,
    )


def _settle(confirm: asyncio.Future[Any]) -> PublishFailed | None:
    """None for an ack; a nack or a return (unroutable) fails the message alone."""
    exc = confirm.exception()
    if exc is None:
        return None
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return PublishFailed(f"broker refused message: {_describe(exc)}")
    return PublishFailed(f"publish failed: {exc!r}")


def _is_nack(confirm: asyncio.Future[Any]) -> bool:
    """A broker's ``Basic.Nack`` (not a return, which says why it could not route)."""
    exc = confirm.exception()
    return isinstance(exc, aiormq.exceptions.DeliveryError) and isinstance(
        exc.frame, aiormq.spec.Basic.Nack
    )


def _link_lost(exc: BaseException) -> str:
    # Type names only: a driver's message can carry the broker URL.
    if type(exc) is RuntimeError:
        # What aio-pika raises for a channel on a connection that is reconnecting.
        return "broker link lost: connection closed, reconnecting"
    return f"broker link lost: {type(exc).__name__}"


def _describe(exc: aiormq.exceptions.DeliveryError) -> str:
    frame = getattr(exc, "frame", None)
    reply_text = getattr(frame, "reply_text", None)
    return str(reply_text) if reply_text else type(exc).__name__
