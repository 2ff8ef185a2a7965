"""Consume → inbox → handler → commit → ack: the loop every message consumer shares."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outbox import metrics
from outbox.envelope import Envelope
from outbox.inbox import Inbox
from outbox.tracing import TRACEPARENT, extract
from outbox.transient import is_transient

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

MAX_HOLD_BACKOFF_S = 5.0

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
"""Applies one message inside the given transaction. It must not commit."""


class Consumer:
    """Runs one handler over one queue, exactly once per ``message_id`` in effect.

    The inbox record, the handler's effect and any outbox rows it writes commit in one
    transaction; the message is acknowledged only after that commit. A crash before the
    commit redelivers the message; a crash after it redelivers a message the inbox
    already holds, which is acknowledged and dropped.
    """

    def __init__(
        self,
        *,
        queue: str,
        inbox: Inbox,
        handler: Handler,
        sessions: async_sessionmaker[AsyncSession],
        prefetch: int,
        delivery_limit: int = 5,
    ) -> None:
        self._queue = queue
        self._delivery_limit = delivery_limit
        # Failures seen here, for queues whose broker does not count deliveries
        # (classic queues); bounded so a stream of distinct failures cannot grow it.
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._inbox = inbox
        self._handler = handler
        self._sessions = sessions
        self._prefetch = prefetch
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    async def run(self, channel: AbstractChannel, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then let in-flight messages finish."""
        self._stop = stop
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.get_queue(self._queue, ensure=True)
        tag = await queue.consume(self._on_message)
        log.info("consuming", queue=self._queue, consumer=self._inbox.consumer)
        await stop.wait()
        # Stop new deliveries first; what is already in hand is finished (or, if it
        # cannot be, left unacknowledged for redelivery), never half-applied.
        await queue.cancel(tag)
        if self._in_flight:
            log.info("finishing in-flight messages", count=len(self._in_flight))
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        log.info("consumer stopped", queue=self._queue)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self.process(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def process(self, message: AbstractIncomingMessage) -> None:
        """Handle one delivery end to end (public so tests can drive it directly)."""
        with structlog.contextvars.bound_contextvars(
            message_id=message.message_id, message_type=message.type, queue=self._queue
        ):
            try:
                envelope = Envelope.from_bytes(message.body)
            except ValidationError as exc:
                # Redelivering cannot fix a body we cannot parse: dead-letter it now.
                log.error("unparseable message dead-lettered", errors=exc.error_count())
                metrics.DEAD_LETTERED.labels(self._queue, "unparseable").inc()
                await _settle(message.reject(requeue=False))
                return
            with (
                structlog.contextvars.bound_contextvars(
                    message_id=str(envelope.message_id),
                    message_type=envelope.message_type,
                    saga_id=str(envelope.saga_id),
                    correlation_id=str(envelope.correlation_id),
                ),
                self._span(message, envelope) as span,
            ):
                result = await self._apply(message, envelope)
                span.set_attribute("sagaway.outcome", result)
                if result in ("failed", "dead_lettered"):
                    span.set_status(Status(StatusCode.ERROR, result))

    def _span(
        self, message: AbstractIncomingMessage, envelope: Envelope
    ) -> AbstractContextManager[Span]:
        """The span of one delivery, a child of the span that wrote the message.

        The handler runs inside it, so the messages it writes to its outbox (a
        participant's reply, the orchestrator's next command) carry the trace on.
        """
        return tracer.start_as_current_span(
            f"process {envelope.message_type}",
            context=extract(_header(message, TRACEPARENT)),
            kind=SpanKind.CONSUMER,
            attributes={
                "saga_id": str(envelope.saga_id),
                "message_id": str(envelope.message_id),
                "message_type": envelope.message_type,
                "messaging.system": "rabbitmq",
                "messaging.operation": "process",
                "messaging.destination": self._queue,
                "messaging.consumer": self._inbox.consumer,
            },
        )

    async def _apply(self, message: AbstractIncomingMessage, envelope: Envelope) -> str:
        with metrics.CONSUME_SECONDS.labels(self._queue).time():
            result = await self._apply_once(message, envelope)
        metrics.CONSUMED.labels(self._queue, result).inc()
        return result

    async def _apply_once(self, message: AbstractIncomingMessage, envelope: Envelope) -> str:
        backoff = 0.1
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    fresh = await self._inbox.record(session, envelope)
                    if fresh:
                        await self._handler(session, envelope)
                break
            except Unprocessable as exc:
                log.error("unprocessable message dead-lettered", reason=str(exc))
                metrics.DEAD_LETTERED.labels(self._queue, "unprocessable").inc()
                await _settle(message.reject(requeue=False))
                return "dead_lettered"
            except Exception as exc:
                if is_transient(exc) and not self._stop.is_set():
                    # The database is briefly away (restart, failover, deadlock): keep
                    # the message and try again instead of spending its delivery budget,
                    # which is meant for messages that are themselves at fault.
                    log.warning(
                        "database unavailable, holding message",
                        error=type(exc).__name__,
                        retry_in_s=backoff,
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_HOLD_BACKOFF_S)
                    continue
                deliveries = self._count_failure(message, envelope)
                if deliveries >= self._delivery_limit:
                    log.exception("message dead-lettered after failing", deliveries=deliveries)
                    metrics.DEAD_LETTERED.labels(self._queue, "delivery_limit").inc()
                    await _settle(message.reject(requeue=False))
                    return "dead_lettered"
                log.exception("message handling failed, will be redelivered", deliveries=deliveries)
                await _settle(message.nack(requeue=True))
                return "failed"
        if not fresh:
            log.info("duplicate message dropped")
        await _settle(message.ack())
        return "applied" if fresh else "duplicate"

    def _count_failure(self, message: AbstractIncomingMessage, envelope: Envelope) -> int:
        """Deliveries of this message so far, this one included.

        Quorum queues count deliveries in ``x-delivery-count``; classic queues do not,
        so failures are counted here instead (per process: with N consumers a poison
        message is delivered at most N times the limit, still bounded).
        """
        header = (message.headers or {}).get("x-delivery-count")
        if isinstance(header, int):
            return header + 1
        key = str(envelope.message_id)
        count = self._failures.pop(key, 0) + 1
        self._failures[key] = count
        while len(self._failures) > 10_000:
            self._failures.popitem(last=False)
        return count


async def _settle(outcome: Awaitable[None]) -> None:
    """Send an ack, nack or reject, unless the delivery's channel has closed meanwhile.

    A closed channel has already handed the message back to the broker, which
    delivers it again: after a commit, the inbox then drops it as a duplicate. aiormq
    refuses the frame at once rather than send it on a channel the broker forgot.
    """
    try:
        await outcome
    except ChannelInvalidStateError:
        log.warning("channel closed before the message was settled; it will be redelivered")


def _header(message: AbstractIncomingMessage, name: str) -> str | bytes | None:
    value = (message.headers or {}).get(name)
    return value if isinstance(value, str | bytes) else None


class Unprocessable(Exception):
    """A message no redelivery can fix (bad payload, unknown type): dead-letter it now."""
