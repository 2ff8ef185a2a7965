"""Consume → inbox → handler → commit → ack: the loop every message consumer shares."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPConnectionError, ChannelClosed, ChannelInvalidStateError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outbox import metrics
from outbox.envelope import Envelope
from outbox.handoff import Handoff
from outbox.inbox import Inbox
from outbox.tracing import TRACEPARENT, extract
from outbox.transient import is_transient

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

MAX_HOLD_BACKOFF_S = 5.0

# How settling a delivery fails when its link went away: refused at once on a channel
# known closed, or failed while the frame was being written by a connection that a
# broker (or a node shutting down) closed under it.
_LINK_GONE = (ChannelInvalidStateError, ChannelClosed, AMQPConnectionError, ConnectionError)

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
"""Applies one message inside the given transaction. It must not commit."""


Prepare = Callable[[AsyncSession, Sequence[Envelope]], Awaitable[None]]
"""Runs once per batch, before its messages are handled, in the same transaction (the
orchestrator locks the batch's sagas here, in one statement and a fixed order)."""


class Consumer:
    """Runs one handler over one queue, exactly once per ``message_id`` in effect.

    The inbox records, the handler's effects and any outbox rows they write commit in
    one transaction; the messages are acknowledged only after that commit. A crash
    before the commit redelivers them; a crash after it redelivers messages the inbox
    already holds, which are acknowledged and dropped.

    Messages are taken in batches: whatever has been delivered when the consumer is
    free, up to ``batch_size``, goes into one transaction and one acknowledgement. It
    never waits for a batch to fill, so a lone message is handled at once. A batch
    that fails is retried message by message, so one poison message is isolated and
    goes through the same redelivery and dead-letter rules as if it had come alone.
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
        batch_size: int | None = None,
        prepare: Prepare | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        self._queue = queue
        self._delivery_limit = delivery_limit
        # Failures seen here, for queues whose broker does not count deliveries
        # (classic queues); bounded so a stream of distinct failures cannot grow it.
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._inbox = inbox
        self._handler = handler
        self._prepare = prepare
        self._handoff = handoff
        self._sessions = sessions
        self._prefetch = prefetch
        self._batch_size = max(1, batch_size or prefetch)
        self._arrived: deque[AbstractIncomingMessage] = deque()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    async def run(self, channel: AbstractChannel, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then let the batch in hand finish."""
        self._stop = stop
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.get_queue(self._queue, ensure=True)
        tag = await queue.consume(self._on_message)
        log.info("consuming", queue=self._queue, consumer=self._inbox.consumer)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if not self._arrived:
                    self._wake.clear()
                    waking = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait((waking, stopping), return_when=asyncio.FIRST_COMPLETED)
                    waking.cancel()
                    continue
                batch = [
                    self._arrived.popleft()
                    for _ in range(min(self._batch_size, len(self._arrived)))
                ]
                await self.process_batch(batch)
        finally:
            stopping.cancel()
        # Stop new deliveries; what arrived but was not started stays unacknowledged
        # and goes back to the queue with the channel, never half-applied.
        await queue.cancel(tag)
        if self._arrived:
            log.info("leaving unstarted messages for redelivery", count=len(self._arrived))
            self._arrived.clear()
        log.info("consumer stopped", queue=self._queue)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._arrived.append(message)
        self._wake.set()

    async def process(self, message: AbstractIncomingMessage) -> None:
        """Handle one delivery end to end (public so tests can drive it directly)."""
        await self.process_batch([message])

    async def process_batch(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """Handle deliveries taken together: one transaction, one acknowledgement."""
        parsed: list[tuple[AbstractIncomingMessage, Envelope]] = []
        for message in messages:
            envelope = await self._parse(message)
            if envelope is not None:
                parsed.append((message, envelope))
        if not parsed:
            return
        if len(parsed) == 1:
            await self._process_one(*parsed[0])
            return
        started = time.perf_counter()
        try:
            fresh = await self._apply_batch(parsed)
        except _BatchFailed as failed:
            # Someone in the batch is at fault, or the handler cannot do them together:
            # apply each alone, so only the guilty one is redelivered or dead-lettered.
            log.warning(
                "batch failed, applying its messages one by one",
                size=len(parsed),
                error=type(failed.__cause__).__name__,
            )
            for message, envelope in parsed:
                await self._process_one(message, envelope)
            return
        # One acknowledgement for the batch: every earlier delivery on this channel is
        # settled already (batches are handled one at a time, in delivery order).
        await _settle(parsed[-1][0].ack(multiple=True))
        elapsed = (time.perf_counter() - started) / len(parsed)
        applied = len(fresh)
        for _, envelope in parsed:
            result = "applied" if envelope.message_id in fresh else "duplicate"
            fresh.discard(envelope.message_id)
            metrics.CONSUME_SECONDS.labels(self._queue).observe(elapsed)
            metrics.CONSUMED.labels(self._queue, result).inc()
        duplicates = len(parsed) - applied
        if duplicates:
            log.info("duplicate messages dropped", count=duplicates, queue=self._queue)

    async def _parse(self, message: AbstractIncomingMessage) -> Envelope | None:
        try:
            return Envelope.from_bytes(message.body)
        except ValidationError as exc:
            # Redelivering cannot fix a body we cannot parse: dead-letter it now.
            with structlog.contextvars.bound_contextvars(
                message_id=message.message_id, message_type=message.type, queue=self._queue
            ):
                log.error("unparseable message dead-lettered", errors=exc.error_count())
            metrics.DEAD_LETTERED.labels(self._queue, "unparseable").inc()
            # Settled before the batch's acknowledgement, which would cover it too.
            await _settle(message.reject(requeue=False))
            return None

    async def _apply_batch(
        self, parsed: Sequence[tuple[AbstractIncomingMessage, Envelope]]
    ) -> set[uuid.UUID]:
        """Apply a batch in one transaction; the ids that were new to the inbox."""
        envelopes = [envelope for _, envelope in parsed]
        backoff = 0.1
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    handing = self._handoff.start(session) if self._handoff else None
                    fresh = await self._inbox.record_many(session, envelopes)
                    todo = list(
                        {e.message_id: e for e in envelopes if e.message_id in fresh}.values()
                    )
                    if todo and self._prepare is not None:
                        await self._prepare(session, todo)
                    # A message delivered twice into one batch is applied once.
                    pending = set(fresh)
                    for message, envelope in parsed:
                        if envelope.message_id in pending:
                            pending.discard(envelope.message_id)
                            await self._handle_in_span(session, message, envelope)
                if self._handoff is not None and handing is not None:
                    # Committed: the next hop starts now, not when a relay wakes.
                    await self._handoff.publish(handing)
                return fresh
            except Exception as exc:
                held = await self._hold(exc, backoff, count=len(parsed))
                if held is None:
                    raise _BatchFailed from exc
                backoff = held

    async def _handle_in_span(
        self, session: AsyncSession, message: AbstractIncomingMessage, envelope: Envelope
    ) -> None:
        with (
            structlog.contextvars.bound_contextvars(
                message_id=str(envelope.message_id),
                message_type=envelope.message_type,
                saga_id=str(envelope.saga_id),
                correlation_id=str(envelope.correlation_id),
            ),
            self._span(message, envelope),
        ):
            await self._handler(session, envelope)

    async def _process_one(self, message: AbstractIncomingMessage, envelope: Envelope) -> None:
        with (
            structlog.contextvars.bound_contextvars(
                message_id=str(envelope.message_id),
                message_type=envelope.message_type,
                saga_id=str(envelope.saga_id),
                correlation_id=str(envelope.correlation_id),
                queue=self._queue,
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
                    handing = self._handoff.start(session) if self._handoff else None
                    fresh = await self._inbox.record(session, envelope)
                    if fresh:
                        if self._prepare is not None:
                            await self._prepare(session, [envelope])
                        await self._handler(session, envelope)
                break
            except Unprocessable as exc:
                log.error("unprocessable message dead-lettered", reason=str(exc))
                metrics.DEAD_LETTERED.labels(self._queue, "unprocessable").inc()
                await _settle(message.reject(requeue=False))
                return "dead_lettered"
            except Exception as exc:
                held = await self._hold(exc, backoff, count=1)
                if held is not None:
                    backoff = held
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
        if self._handoff is not None and handing is not None:
            await self._handoff.publish(handing)
        await _settle(message.ack())
        return "applied" if fresh else "duplicate"

    async def _hold(self, exc: Exception, backoff: float, *, count: int) -> float | None:
        """When ``exc`` says the database is briefly away (restart, failover, deadlock),
        wait ``backoff`` and return the next one: the messages are kept and tried again
        instead of spending their delivery budget, which is meant for messages that are
        themselves at fault. None when they are at fault, or the consumer is stopping."""
        if not is_transient(exc) or self._stop.is_set():
            return None
        log.warning(
            "database unavailable, holding messages",
            error=type(exc).__name__,
            count=count,
            retry_in_s=backoff,
        )
        await asyncio.sleep(backoff)
        return min(backoff * 2, MAX_HOLD_BACKOFF_S)

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
    refuses the frame at once rather than send it on a channel the broker forgot, or
    fails it when the connection closes while it is written (a node lost or shutting
    down); either way the consumer carries on, on the connection's next link.
    """
    try:
        await outcome
    except _LINK_GONE:
        log.warning("channel closed before the message was settled; it will be redelivered")


def _header(message: AbstractIncomingMessage, name: str) -> str | bytes | None:
    value = (message.headers or {}).get(name)
    return value if isinstance(value, str | bytes) else None


class _BatchFailed(Exception):
    """A batch could not be applied as a whole (the cause is chained)."""


class Unprocessable(Exception):
    """A message no redelivery can fix (bad payload, unknown type): dead-letter it now."""
