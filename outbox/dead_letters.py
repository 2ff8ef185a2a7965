"""Reading dead-lettered messages without consuming them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelNotFoundEntity

from sagaway.outbox.amqp import message_count
from sagaway.outbox.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered message and why it died."""

    queue: str
    message_id: str | None
    message_type: str | None
    reason: str | None
    deliveries: int | None
    body: str


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    """A dead-letter queue: how many it holds and the first few."""

    queue: str
    count: int
    messages: list[DeadLetter]


async def peek(
    connection: AbstractRobustConnection, queues: Sequence[str], *, limit: int
) -> list[DeadLetterQueue]:
    """Up to ``limit`` messages of each queue; every one is put back untouched.

    A queue that does not exist yet (declared when its consumer first starts) holds
    nothing: it is answered as empty.

    Raises:
        BrokerUnavailable: RabbitMQ was lost before or while reading.
    """
    try:
        return await _peek(connection, queues, limit=limit)
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        raise BrokerUnavailable(f"cannot read dead letters: {type(exc).__name__}") from exc


async def _peek(
    connection: AbstractRobustConnection, queues: Sequence[str], *, limit: int
) -> list[DeadLetterQueue]:
    result: list[DeadLetterQueue] = []
    channel = await connection.channel()
    try:
        for name in queues:
            try:
                queue = await channel.get_queue(name, ensure=True)
            except ChannelNotFoundEntity:
                result.append(DeadLetterQueue(queue=name, count=0, messages=[]))
                # The broker closed the channel; closing it here too stops aio-pika's
                # robust channel from reopening it behind our back.
                await channel.close()
                channel = await connection.channel()
                continue
            count = await message_count(channel, name)
            held: list[AbstractIncomingMessage] = []
            for _ in range(min(limit, count)):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
            letters = [_describe(name, m) for m in held]
            for message in held:
                await message.nack(requeue=True)
            result.append(DeadLetterQueue(queue=name, count=count, messages=letters))
    finally:
        await channel.close()
    return result


def _describe(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(message.headers or {})
    deaths = headers.get("x-death") or []
    first = deaths[0] if isinstance(deaths, list) and deaths else {}
    reason = headers.get("x-first-death-reason") or (first.get("reason") if first else None)
    count = first.get("count") if isinstance(first, dict) else None
    return DeadLetter(
        queue=queue,
        message_id=message.message_id,
        message_type=message.type,
        reason=str(reason) if reason is not None else None,
        deliveries=int(count) if isinstance(count, int) else None,
        body=message.body[:2000].decode(errors="replace"),
    )
