"""The aiormq internals the relay's batched write relies on, against the real RabbitMQ.

If one of these fails after an aiormq upgrade, ``outbox/aiormq_adapter.py`` needs
updating before that release is allowed by pyproject.toml: each failure names the
attribute that changed. The first group asserts the shapes; the rest run real batches
through the bookkeeping (acks, a return, a nack, an abandoned batch, a cut-short write)
and check that every message is settled as itself and the channel's numbering holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiormq
import pytest
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic
from pamqp.heartbeat import Heartbeat

from sagaway.outbox.aiormq_adapter import (
    AiormqInternalsChanged,
    BatchChannel,
    Publication,
    check_internals,
)
from sagaway.outbox.settings import Settings
from tests.support import wait_for

ROUTING_KEY = "adapter-test"


@dataclasses.dataclass(frozen=True, slots=True)
class Wire:
    """A confirm channel of the test's own, with an exchange and queue bound to it."""

    channel: aiormq.Channel
    exchange: str
    queue: str


@pytest.fixture
async def wire(settings: Settings) -> AsyncIterator[Wire]:
    connection = await aiormq.connect(settings.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    assert isinstance(channel, aiormq.Channel)
    name = f"{settings.namespace}.adapter-{uuid.uuid4().hex[:8]}"
    await channel.exchange_declare(name, exchange_type="direct", auto_delete=True)
    await channel.queue_declare(name, auto_delete=True)
    await channel.queue_bind(name, name, routing_key=ROUTING_KEY)
    yield Wire(channel=channel, exchange=name, queue=name)
    await connection.close()
    # auto_delete removes a queue only after a consumer has come and gone: most of these
    # were never consumed from, so they are deleted here (with any a test added).
    cleanup = await aiormq.connect(settings.amqp_url)
    try:
        channel = await cleanup.channel()
        for queue in (name, f"{name}-full"):
            await channel.queue_delete(queue)
        await channel.exchange_delete(name)
    finally:
        await cleanup.close()


def publication(
    wire: Wire, *, n: int = 0, routing_key: str = ROUTING_KEY, **fields: Any
) -> Publication:
    values: dict[str, Any] = {
        "exchange": wire.exchange,
        "routing_key": routing_key,
        "body": f'{{"n": {n}}}'.encode(),
        "message_id": str(uuid.uuid4()),
        "message_type": "AdapterTest",
        "correlation_id": str(uuid.uuid4()),
        "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        **fields,
    }
    return Publication(**values)


async def drain(wire: Wire, queue: str | None = None) -> list[aiormq.abc.DeliveredMessage]:
    """Every message in the queue right now."""
    got: list[aiormq.abc.DeliveredMessage] = []
    while True:
        message = await wire.channel.basic_get(queue or wire.queue, no_ack=True)
        if isinstance(message.delivery, Basic.GetEmpty):
            return got
        got.append(message)


async def received_ids(wire: Wire, count: int) -> list[str | None]:
    got: list[aiormq.abc.DeliveredMessage] = []

    async def fetch() -> int:
        got.extend(await drain(wire))
        return len(got)

    await wait_for(fetch, until=lambda n: n >= count, what=f"{count} messages")
    return [m.header.properties.message_id for m in got]


async def settle(batch_settled: asyncio.Future[None]) -> None:
    await asyncio.wait_for(asyncio.shield(batch_settled), timeout=10)


# --- the shapes -------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


CHANNEL_INTERNALS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "delivery_tag": ("an int, the last publish sequence number", _is_int),
    "confirmations": ("a dict: delivery tag -> confirm future", lambda v: isinstance(v, dict)),
    "message_id_delivery_tag": (
        "a dict: message id -> delivery tag, how a Basic.Return finds its confirm",
        lambda v: isinstance(v, dict),
    ),
    "write_queue": ("the connection's asyncio.Queue", lambda v: isinstance(v, asyncio.Queue)),
    "max_content_size": ("a positive int, the body bytes per frame", lambda v: _is_int(v) and v),
    "number": ("the int channel number", _is_int),
    "publisher_confirms": ("True on a confirm channel", lambda v: v is True),
    "lock": ("an async context manager", lambda v: hasattr(v, "__aenter__")),
    "create_future": ("a method making futures failed when the channel closes", callable),
    "_on_confirm_frame": ("the reader's Basic.Ack/Nack handler", callable),
    "_on_return_frame": ("the reader's Basic.Return handler", callable),
    "_confirm_delivery": ("settles one tag of an ack or nack", callable),
}


@pytest.mark.parametrize("name", sorted(CHANNEL_INTERNALS))
async def test_the_channel_still_has(wire: Wire, name: str) -> None:
    expected, shape = CHANNEL_INTERNALS[name]
    assert hasattr(wire.channel, name), f"aiormq.Channel.{name} is gone; it was {expected}"
    value = getattr(wire.channel, name)
    assert shape(value), f"aiormq.Channel.{name} is now {value!r}; expected {expected}"


async def test_the_writer_queue_and_its_frames_are_as_the_adapter_writes_them(
    wire: Wire,
) -> None:
    channel = wire.channel
    assert channel.write_queue is channel.connection.write_queue, (
        "aiormq.Channel.write_queue is no longer its connection's writer queue"
    )
    fields = [f.name for f in dataclasses.fields(ChannelFrame)]
    assert fields == ["payload", "should_close", "drain_future"], (
        f"aiormq.abc.ChannelFrame fields changed: {fields}"
    )
    assert inspect.iscoroutinefunction(channel.connection.ready), (
        "aiormq.Connection.ready is no longer a coroutine function"
    )
    # A drain future is resolved by the writer once the bytes reach the socket.
    drained = channel.create_future()
    await channel.write_queue.put(
        ChannelFrame.marshall(channel_number=0, frames=[Heartbeat()], drain_future=drained)
    )
    await asyncio.wait_for(drained, timeout=5)


async def test_check_internals_passes_on_the_installed_aiormq(wire: Wire) -> None:
    assert check_internals(wire.channel) is wire.channel


@pytest.mark.parametrize(
    "name", ["delivery_tag", "confirmations", "message_id_delivery_tag", "max_content_size"]
)
async def test_check_internals_names_an_attribute_that_is_gone(
    wire: Wire, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(wire.channel, name)
    with pytest.raises(AiormqInternalsChanged, match=rf"Channel\.{name} is gone"):
        BatchChannel(wire.channel)


async def test_check_internals_names_an_attribute_of_another_shape(
    wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire.channel, "confirmations", [])
    with pytest.raises(AiormqInternalsChanged, match=r"Channel\.confirmations is list"):
        BatchChannel(wire.channel)


# --- real batches ---------------------------------------------------------------


async def test_a_batch_is_confirmed_in_order_and_leaves_no_bookkeeping(wire: Wire) -> None:
    channel = BatchChannel(wire.channel)
    big = publication(wire, body=bytes(range(256)) * 4096)  # several content frames
    messages = [publication(wire, n=n) for n in range(500)] + [big]
    before = wire.channel.delivery_tag

    batch = channel.batch()
    await batch.write(messages)
    await settle(batch.settled)

    assert all(isinstance(c.result(), Basic.Ack) for c in batch.confirms)
    assert wire.channel.delivery_tag == before + len(messages)
    assert wire.channel.confirmations == {}
    assert wire.channel.message_id_delivery_tag == {}
    assert await received_ids(wire, len(messages)) == [m.message_id for m in messages]


async def test_a_return_a_nack_and_an_unencodable_message_fail_alone(
    wire: Wire, settings: Settings
) -> None:
    # A queue that refuses what exceeds one message: the broker nacks the excess.
    full = f"{wire.queue}-full"  # deleted with the wire's queue
    await wire.channel.queue_declare(
        full, auto_delete=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await wire.channel.queue_bind(full, wire.exchange, routing_key="full")
    channel = BatchChannel(wire.channel)
    ok = [publication(wire, n=n) for n in range(3)]
    unroutable = publication(wire, routing_key="nobody-listens")
    unencodable = publication(wire, message_type="x" * 300)  # a shortstr holds 255 bytes
    first_in, refused = publication(wire, routing_key="full"), publication(wire, routing_key="full")
    messages = [ok[0], unroutable, ok[1], unencodable, first_in, refused, ok[2]]
    before = wire.channel.delivery_tag

    batch = channel.batch()
    await batch.write(messages)
    await settle(batch.settled)

    outcome = [c.exception() for c in batch.confirms]
    assert [type(e).__name__ for e in outcome] == [
        "NoneType",
        "PublishError",
        "NoneType",
        "TypeError",
        "NoneType",
        "DeliveryError",
        "NoneType",
    ]
    assert "NO_ROUTE" in str(outcome[1])
    # The unencodable message took no delivery tag: its neighbours' confirms are theirs.
    assert wire.channel.delivery_tag == before + len(messages) - 1
    assert wire.channel.message_id_delivery_tag == {}
    assert await received_ids(wire, 3) == [m.message_id for m in ok]
    assert [m.header.properties.message_id for m in await drain(wire, full)] == [
        first_in.message_id
    ]


async def test_an_abandoned_batch_leaves_the_channel_usable_and_quiet(
    wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    channel = BatchChannel(wire.channel)
    abandoned = [publication(wire, n=n) for n in range(200)]
    abandoned.append(publication(wire, routing_key="nobody-listens"))

    with caplog.at_level(logging.WARNING, logger="aiormq"):
        batch = channel.batch()
        await batch.write(abandoned)
        batch.abandon()  # before any confirm can have arrived
        assert all(c.cancelled() for c in batch.confirms)
        assert wire.channel.message_id_delivery_tag == {}

        after = [publication(wire, n=n) for n in range(50)]
        next_batch = channel.batch()
        await next_batch.write(after)
        await settle(next_batch.settled)

    assert all(isinstance(c.result(), Basic.Ack) for c in next_batch.confirms)
    assert not wire.channel.is_closed
    # The late confirms found their cancelled futures and were dropped without a word.
    assert wire.channel.confirmations == {}
    assert [r.getMessage() for r in caplog.records if "confirm" in r.getMessage()] == []
    ids = await received_ids(wire, 250)
    assert ids == [m.message_id for m in abandoned[:-1] + after]


async def test_a_write_cut_short_by_its_deadline_keeps_the_channel_numbering(
    wire: Wire,
) -> None:
    channel = BatchChannel(wire.channel)
    before = wire.channel.delivery_tag
    # Fill the writer's queue so the write has to wait for room, then let the deadline
    # cut it there: nothing of that batch reaches the writer and no tag is taken.
    while not wire.channel.write_queue.full():
        wire.channel.write_queue.put_nowait(ChannelFrame.marshall(0, [Heartbeat()]))
    cut = channel.batch()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await cut.write([publication(wire, n=n) for n in range(10)])
    cut.abandon()
    assert wire.channel.delivery_tag == before, "tags were taken for a batch never written"
    assert not any(c.done() and not c.cancelled() for c in cut.confirms)

    after = [publication(wire, n=n) for n in range(20)]
    batch = channel.batch()
    await batch.write(after)
    await settle(batch.settled)

    assert all(isinstance(c.result(), Basic.Ack) for c in batch.confirms)
    assert await received_ids(wire, 20) == [m.message_id for m in after]


async def test_a_closed_channel_refuses_the_write_and_fails_the_link_watch(wire: Wire) -> None:
    channel = BatchChannel(wire.channel)
    link = channel.watch_link()
    await wire.channel.close()

    assert channel.is_closed
    assert link.done() and link.exception() is not None
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        await channel.batch().write([publication(wire)])
