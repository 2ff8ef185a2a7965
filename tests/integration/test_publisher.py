"""The batched publisher on the real RabbitMQ: every message of a batch is settled on
its own, in order, and a batch never fails as a whole because of one message."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika

from sagaway.outbox.amqp import connect
from sagaway.outbox.errors import BrokerUnavailable, PublishFailed
from sagaway.outbox.publisher import AioPikaPublisher, RawMessage
from sagaway.outbox.settings import Settings
from tests.integration.test_outbox_relay import ROUTING_KEY, Target, take
from tests.support import wait_for

pytest_plugins = ["tests.integration.test_outbox_relay"]


def raw(
    target: Target,
    *,
    body: bytes = b"{}",
    exchange: str | None = None,
    routing_key: str = ROUTING_KEY,
) -> RawMessage:
    return RawMessage(
        message_id=str(uuid.uuid4()),
        message_type="PublisherTest",
        correlation_id=str(uuid.uuid4()),
        exchange=target.exchange if exchange is None else exchange,
        routing_key=routing_key,
        body=body,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


async def test_one_bad_message_fails_alone_and_the_rest_arrive_in_order(
    publisher: AioPikaPublisher, target: Target
) -> None:
    ok = [raw(target, body=f'{{"n": {n}}}'.encode()) for n in range(3)]
    missing_exchange = raw(target, exchange=f"no-such-exchange-{uuid.uuid4().hex[:8]}")
    unroutable = raw(target, routing_key="nobody-listens")
    too_large = raw(target, body=b"x" * (17 * 1024 * 1024))
    batch = [ok[0], missing_exchange, ok[1], unroutable, too_large, ok[2]]

    results = await publisher.publish_batch(batch)

    assert [r is None for r in results] == [True, False, True, False, False, True]
    assert "does not exist" in str(results[1])
    assert "NO_ROUTE" in str(results[3])
    assert "exceeds" in str(results[4])
    assert all(isinstance(r, PublishFailed) for r in (results[1], results[3], results[4]))
    received = await take(target.queue, 3)
    assert [m.message_id for m in received] == [m.message_id for m in ok]
    assert [m.body for m in received] == [m.body for m in ok]
    first = received[0]
    assert first.correlation_id == ok[0].correlation_id
    assert first.type == "PublisherTest"
    assert first.content_type == "application/json"
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.headers["traceparent"] == ok[0].traceparent


async def test_a_body_larger_than_a_frame_arrives_whole(
    publisher: AioPikaPublisher, target: Target
) -> None:
    # 1 MiB: several content frames at the negotiated frame size (128 KiB by default).
    big = raw(target, body=bytes(range(256)) * 4096)

    assert await publisher.publish_batch([big, raw(target)]) == [None, None]

    [first, second] = await take(target.queue, 2)
    assert first.body == big.body
    assert second.body == b"{}"


async def test_a_batch_past_its_deadline_fails_at_once_and_the_publisher_goes_on(
    settings: Settings, target: Target
) -> None:
    connection = await connect(settings.amqp_url, name="publisher-test-deadline")
    try:
        # A zero deadline expires before the batch is written or confirmed.
        impatient = AioPikaPublisher(connection, timeout_s=0)
        results = await asyncio.wait_for(
            impatient.publish_batch([raw(target) for _ in range(5)]), timeout=5
        )
        assert all(isinstance(r, PublishFailed | BrokerUnavailable) for r in results), results

        patient = AioPikaPublisher(connection, timeout_s=settings.publish_timeout_s)
        confirmed = [raw(target) for _ in range(5)]
        assert await patient.publish_batch(confirmed) == [None] * 5
    finally:
        await connection.close()
    # The confirmed batch arrived (with whatever of the first one reached the broker).
    received: set[str | None] = set()

    async def drained() -> set[str | None]:
        while (m := await target.queue.get(no_ack=True, fail=False)) is not None:
            received.add(m.message_id)
        return received

    await wait_for(drained, until=lambda ids: {m.message_id for m in confirmed} <= ids)


async def test_a_batch_of_thousands_is_confirmed_message_by_message(
    publisher: AioPikaPublisher, target: Target
) -> None:
    batch = [raw(target, body=f'{{"n": {n}}}'.encode()) for n in range(3000)]

    results = await publisher.publish_batch(batch)

    assert results == [None] * 3000
    received = await take(target.queue, 3000)
    assert [m.message_id for m in received] == [m.message_id for m in batch]


async def test_a_nacked_message_fails_alone_and_the_next_batch_goes_out_on_a_new_channel(
    publisher: AioPikaPublisher, target: Target, channel: aio_pika.abc.AbstractChannel
) -> None:
    # A queue that is always full and refuses publishes: the broker nacks what reaches it,
    # as a quorum queue nacks what a lost leader could not take.
    full = f"{target.exchange}-full"
    queue = await channel.declare_queue(
        full, durable=False, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await queue.bind(target.exchange, routing_key="full")
    try:
        [nacked, delivered] = await publisher.publish_batch(
            [raw(target, routing_key="full"), raw(target)]
        )
        assert isinstance(nacked, PublishFailed), nacked
        assert delivered is None
        # The channel the nack came on is retired: the next batch opens a new one.
        assert publisher._channel is None, "a nack must retire the channel it came on"

        again = raw(target)
        assert await publisher.publish_batch([again]) == [None]
        assert publisher._channel is not None
        received = await take(target.queue, 2)
        assert received[-1].message_id == again.message_id
    finally:
        await channel.queue_delete(full)
