"""The one module that reaches into aiormq's channel internals: a batch in one write.

aiormq's public ``Channel.basic_publish`` sends one message per call and awaits its
confirm, so keeping a batch in flight takes a task, a lock round and a socket write per
message: most of the relay's CPU when it published that way. Here a whole batch is
written as a few buffers on the channel's writer queue, and each message is registered
in the channel's own confirm and return bookkeeping exactly as ``basic_publish`` does,
so aiormq's reader settles it.

What this relies on (aiormq 7.2; ``check_internals`` asserts each one, and
tests/integration/test_aiormq_adapter.py runs a real batch through them):

* ``Channel.lock``: an async context manager that serializes writers and refuses a
  closed channel;
* ``Channel.delivery_tag``: the last publish sequence number used on the channel;
* ``Channel.confirmations``: delivery tag -> future, settled by the reader on
  ``Basic.Ack``/``Basic.Nack``; a future already cancelled is dropped quietly;
* ``Channel.message_id_delivery_tag``: message id -> delivery tag, how the reader
  matches a ``Basic.Return`` to its confirm;
* ``Channel.write_queue`` (the connection's) and ``Channel.max_content_size``;
* ``aiormq.abc.ChannelFrame(payload, should_close, drain_future)``: what the writer
  takes off that queue, resolving ``drain_future`` once the bytes reach the socket.

No upstream API does this yet: a ``basic_publish`` variant that returns the confirm
future once the frames are queued, or one that takes many messages, would replace all
of it (see the README).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from typing import Any

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.common import FieldTable
from pamqp.header import ContentHeader

# A batch is written in buffers of about this many body bytes (one for a usual batch).
FLUSH_BYTES = 1024 * 1024
PERSISTENT = 2

Confirm = asyncio.Future[Any]
"""Settled by aiormq's reader: a result for ``Basic.Ack``; ``DeliveryError`` for a
nack, ``PublishError`` for a return; or the error that kept the message off the wire."""


class AiormqInternalsChanged(TypeError):
    """The installed aiormq lacks a channel internal the batched write relies on.

    Not a link error: the publisher must not take it for a broker that went away.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class Publication:
    """One message as it goes on the wire: persistent, ``mandatory``, JSON."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    message_type: str
    correlation_id: str | None
    headers: FieldTable | None = None


# Name -> (description, test). Checked on every channel this module is given, so a
# release that moved one fails at the first batch with the attribute's name, not with
# confirms silently matched to the wrong messages.
_CHANNEL_INTERNALS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "delivery_tag": ("an int publish sequence number", lambda v: isinstance(v, int)),
    "confirmations": ("a dict of delivery tag -> future", lambda v: isinstance(v, dict)),
    "message_id_delivery_tag": (
        "a dict of message id -> delivery tag",
        lambda v: isinstance(v, dict),
    ),
    "write_queue": ("the connection's asyncio.Queue", lambda v: isinstance(v, asyncio.Queue)),
    "max_content_size": ("a positive int", lambda v: isinstance(v, int) and v > 0),
    "number": ("the int channel number", lambda v: isinstance(v, int)),
    "publisher_confirms": ("True (a channel opened with confirms)", lambda v: v is True),
    "lock": (
        "an async context manager",
        lambda v: hasattr(v, "__aenter__") and hasattr(v, "__aexit__"),
    ),
}
_READER_HOOKS = ("_on_confirm_frame", "_on_return_frame", "_confirm_delivery")
_CHANNEL_FRAME_FIELDS = ("payload", "should_close", "drain_future")


def check_internals(channel: aiormq.abc.AbstractChannel) -> aiormq.Channel:
    """Return ``channel`` as aiormq's ``Channel`` once every internal used here is there.

    Raises:
        AiormqInternalsChanged: naming the first attribute that is missing or changed.
    """
    if not isinstance(channel, aiormq.Channel):
        raise _changed(f"the channel is a {type(channel).__name__}, not aiormq.Channel")
    for name, (expected, test) in _CHANNEL_INTERNALS.items():
        if not hasattr(channel, name):
            raise _changed(f"Channel.{name} is gone (was {expected})")
        value = getattr(channel, name)
        if not test(value):
            raise _changed(f"Channel.{name} is {type(value).__name__}, expected {expected}")
    if channel.write_queue is not channel.connection.write_queue:
        raise _changed("Channel.write_queue is no longer its connection's writer queue")
    for hook in _READER_HOOKS:
        if not callable(getattr(channel, hook, None)):
            raise _changed(
                f"Channel.{hook} is gone: the reader may no longer settle confirmations "
                "the way this module registers them"
            )
    if not inspect.iscoroutinefunction(getattr(channel.connection, "ready", None)):
        raise _changed("Connection.ready is no longer a coroutine function")
    fields = tuple(f.name for f in dataclasses.fields(ChannelFrame))
    if fields != _CHANNEL_FRAME_FIELDS:
        raise _changed(f"aiormq.abc.ChannelFrame fields are {fields}, not {_CHANNEL_FRAME_FIELDS}")
    return channel


def _changed(detail: str) -> AiormqInternalsChanged:
    return AiormqInternalsChanged(
        f"aiormq {version('aiormq')}: {detail}; outbox/aiormq_adapter.py needs updating"
    )


class BatchChannel:
    """An aiormq channel opened with publisher confirms, written a batch at a time."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self._wire = check_internals(channel)
        self._marshal = _Marshaller(self._wire.number, self._wire.max_content_size)

    @property
    def underlay(self) -> aiormq.abc.AbstractChannel:
        """The aiormq channel written to."""
        return self._wire

    @property
    def is_closed(self) -> bool:
        """True once the channel (or its connection) is closed."""
        return self._wire.is_closed

    def watch_link(self) -> asyncio.Future[Any]:
        """A future aiormq fails when the channel or its connection closes: one watch for
        a whole batch instead of registering every confirm with the channel."""
        return self._wire.create_future()

    async def writable(self) -> None:
        """Wait while RabbitMQ blocks the connection's publishers (a resource alarm)."""
        await self._wire.connection.ready()

    def batch(self) -> PendingBatch:
        """An empty batch to write on this channel."""
        return PendingBatch(self._wire, self._marshal)


class PendingBatch:
    """One batch's confirms in publishing order, and a future set once all are settled.

    ``confirms`` gets one future per publication as ``write`` goes, so a write cut short
    by a deadline still tells which messages reached the channel.
    """

    def __init__(self, wire: aiormq.Channel, marshal: _Marshaller) -> None:
        loop = asyncio.get_running_loop()
        self.confirms: list[Confirm] = []
        self.settled: asyncio.Future[None] = loop.create_future()
        self._registered: list[tuple[int, str, Confirm]] = []
        self._open = 0
        self._loop = loop
        self._wire = wire
        self._marshal = marshal

    async def write(self, publications: Sequence[Publication]) -> None:
        """Write ``publications`` in order, in buffers of about ``FLUSH_BYTES`` (once
        per batch).

        A message whose frames cannot be encoded (a field too long for AMQP) gets a
        failed confirm and no delivery tag: it never shifts its neighbours' tags.
        Delivery tags are taken only for a buffer already queued for the writer, so a
        write cancelled by a deadline leaves the channel's numbering true.

        Raises:
            aiormq.exceptions.ChannelInvalidStateError: the channel is closed.
        """
        # Counted up front: confirms of a first buffer may all arrive while a later
        # one is being written, and must not settle the batch early.
        self._open = len(publications)
        if not publications:
            self.settled.set_result(None)
            return
        wire = self._wire
        parts: list[bytes] = []
        queued: list[tuple[str, Confirm]] = []
        pending_bytes = 0

        async def flush() -> None:
            drained = wire.create_future()
            # Cancelled here: nothing was queued and no tag taken.
            await wire.write_queue.put(
                ChannelFrame(payload=b"".join(parts), should_close=False, drain_future=drained)
            )
            for message_id, confirm in queued:
                self._register(message_id, confirm)
            parts.clear()
            queued.clear()
            # Waiting for each buffer to reach the socket bounds the memory a batch of
            # large messages can take, as aiormq's own publish does per message.
            await drained

        async with wire.lock:
            for publication in publications:
                confirm: Confirm = self._loop.create_future()
                self.confirms.append(confirm)
                try:
                    payload = self._marshal(publication)
                except (ValueError, TypeError, struct.error) as exc:
                    confirm.set_exception(exc)
                    self._settle_one()
                    continue
                parts.append(payload)
                queued.append((publication.message_id, confirm))
                pending_bytes += len(publication.body)
                if pending_bytes >= FLUSH_BYTES:
                    await flush()
                    pending_bytes = 0
            if parts:
                await flush()

    def abandon(self) -> None:
        """Stop waiting: cancel every unsettled confirm.

        A cancelled confirm stays in the channel's bookkeeping until the broker's late
        ack or nack arrives, which aiormq then drops quietly; its message id mapping
        goes at once, so a late return finds nothing to fail.
        """
        for tag, message_id, confirm in self._registered:
            if not confirm.done():
                self._forget(message_id, tag)
        for confirm in self.confirms:
            confirm.cancel()

    def _register(self, message_id: str, confirm: Confirm) -> None:
        wire = self._wire
        wire.delivery_tag += 1
        tag = wire.delivery_tag
        wire.confirmations[tag] = confirm
        # A returned message is matched to its confirm by message_id.
        wire.message_id_delivery_tag[message_id] = tag
        confirm.add_done_callback(partial(self._done, message_id, tag))
        self._registered.append((tag, message_id, confirm))

    def _done(self, message_id: str, tag: int, _: object) -> None:
        self._forget(message_id, tag)
        self._settle_one()

    def _forget(self, message_id: str, tag: int) -> None:
        # Only our own mapping: the same message id may be in flight again by now.
        mapping = self._wire.message_id_delivery_tag
        if mapping.get(message_id) == tag:
            del mapping[message_id]

    def _settle_one(self) -> None:
        self._open -= 1
        if self._open == 0 and not self.settled.done():
            self.settled.set_result(None)


class _Marshaller:
    """The wire bytes of messages on one channel.

    The ``Basic.Publish`` method frame depends only on the channel, exchange and
    routing key, and encoding it was about a seventh of a message's publishing CPU: it
    is encoded once per destination (a handful, from the topology; the cache is
    bounded all the same).
    """

    MAX_DESTINATIONS = 1024

    def __init__(self, channel: int, chunk: int) -> None:
        self._channel = channel
        self._chunk = chunk
        self._publish: dict[tuple[str, str], bytes] = {}

    def __call__(self, publication: Publication) -> bytes:
        """Method, header and body frames of one message."""
        channel, chunk, body = self._channel, self._chunk, publication.body
        key = (publication.exchange, publication.routing_key)
        method = self._publish.get(key)
        if method is None:
            method = pamqp.frame.marshal(
                Basic.Publish(exchange=key[0], routing_key=key[1], mandatory=True), channel
            )
            if len(self._publish) >= self.MAX_DESTINATIONS:
                self._publish.clear()
            self._publish[key] = method
        header = ContentHeader(
            properties=Basic.Properties(
                content_type="application/json",
                delivery_mode=PERSISTENT,
                message_id=publication.message_id,
                correlation_id=publication.correlation_id,
                message_type=publication.message_type,
                headers=publication.headers,
            ),
            body_size=len(body),
        )
        parts = [method, pamqp.frame.marshal(header, channel)]
        parts.extend(
            pamqp.frame.marshal(ContentBody(body[i : i + chunk]), channel)
            for i in range(0, len(body), chunk)
        )
        return b"".join(parts)
