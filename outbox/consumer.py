"""Consume → inbox → handler → commit → ack: the loop every message consumer shares."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPConnectionError, ChannelClosed, ChannelInvalidStateError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.outbox import metrics
from sagaway.outbox.admission import Refusal, Screen, admit, clip
from sagaway.outbox.envelope import DEFAULT_MAX_MESSAGE_BYTES, Envelope
from sagaway.outbox.errors import Unprocessable
from sagaway.outbox.handoff import Handoff
from sagaway.outbox.inbox import Inbox, body_digest
from sagaway.outbox.tracing import TRACEPARENT, extract
from sagaway.outbox.transient import is_transient

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

MAX_HOLD_BACKOFF_S = 5.0

# How settling a delivery fails when its link went away: refused at once on a channel
# known closed, or failed while the frame was being written by a connection that a
# broker (or a node shutting down) closed under it.
_LINK_GONE = (ChannelInvalidStateError, ChannelClosed, AMQPConnectionError, ConnectionError)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A handler's answer for a message it took no action on, on purpose (a reply for
    a saga that does not exist): committed with its inbox record, acknowledged, logged
    and counted as dropped for ``reason``."""

    reason: str


Handler = Callable[[AsyncSession, Envelope], Awaitable[Dropped | None]]
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

    Hostile or broken messages never get that far: what can be judged by the message
    alone (too large, not JSON, not an envelope, text PostgreSQL cannot store, what
    ``screen`` refuses) is dead-lettered on arrival, before the batch is formed; a
    message the handler finds unprocessable inside the transaction is dead-lettered and
    the rest of its batch applied again as one; what the handler drops on purpose
    (``Dropped``) and a message id reused with other content are acknowledged with the
    batch. Each is logged as ``message rejected`` and counted in
    ``sagaway_messages_rejected_total{queue, reason, action}``.
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
        screen: Screen | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._queue = queue
        self._screen = screen
        self._max_bytes = max_message_bytes
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
        batch: list[_Delivery] = []
        for message in messages:
            delivery = await self._admit(message)
            if delivery is not None:
                batch.append(delivery)
        while len(batch) > 1:
            started = time.perf_counter()
            try:
                applied = await self._apply_batch(batch)
            except _Refused as refused:
                # The handler found one message unprocessable: it alone goes to the dead
                # letters, and the others are applied again together, not one by one.
                batch.remove(refused.delivery)
                with self._bound(refused.delivery.envelope):
                    await self._dead_letter(refused.delivery.message, refused.refusal)
                metrics.CONSUMED.labels(self._queue, "dead_lettered").inc()
                continue
            except _BatchFailed as failed:
                # Someone in the batch is at fault, or the handler cannot do them
                # together: apply each alone, so only the guilty one is redelivered or
                # dead-lettered.
                log.warning(
                    "batch failed, applying its messages one by one",
                    size=len(batch),
                    error=type(failed.__cause__).__name__,
                    queue=self._queue,
                )
                metrics.BATCHES.labels(self._queue, "fell_back").inc()
                for delivery in batch:
                    await self._process_one(delivery)
                return
            # One acknowledgement for the batch: every earlier delivery on this channel
            # is settled already (batches are handled one at a time, in delivery order,
            # and what was refused on arrival was rejected before).
            await _settle(batch[-1].message.ack(multiple=True))
            metrics.BATCHES.labels(self._queue, "committed").inc()
            metrics.BATCHED_MESSAGES.labels(self._queue).inc(len(batch))
            elapsed = (time.perf_counter() - started) / len(batch)
            duplicates = 0
            for delivery, result in zip(batch, applied.results(batch), strict=True):
                metrics.CONSUME_SECONDS.labels(self._queue).observe(elapsed)
                metrics.CONSUMED.labels(self._queue, _consumed(result)).inc()
                duplicates += result == _DUPLICATE
                if isinstance(result, Dropped):
                    with self._bound(delivery.envelope):
                        self._dropped(delivery, result.reason)
            if duplicates:
                log.info("duplicate messages dropped", count=duplicates, queue=self._queue)
            return
        if batch:
            await self._process_one(batch[0])

    async def _admit(self, message: AbstractIncomingMessage) -> _Delivery | None:
        """The delivery ready to apply, or None once it was dead-lettered on arrival."""
        admitted = admit(message.body, max_bytes=self._max_bytes, screen=self._screen)
        if isinstance(admitted, Refusal):
            await self._dead_letter(message, admitted)
            metrics.CONSUMED.labels(self._queue, "dead_lettered").inc()
            return None
        return _Delivery(message, admitted, body_digest(message.body))

    async def _dead_letter(self, message: AbstractIncomingMessage, refusal: Refusal) -> None:
        """Dead-letter ``message`` now: redelivering it cannot change what it is."""
        self._log_rejected(message, refusal.reason, "dead_lettered", detail=refusal.detail)
        metrics.DEAD_LETTERED.labels(self._queue, refusal.reason).inc()
        # Settled before the batch's acknowledgement, which would cover it too.
        await _settle(message.reject(requeue=False))

    def _dropped(self, delivery: _Delivery, reason: str) -> None:
        """Note a message acknowledged without effect (its batch has committed)."""
        self._log_rejected(delivery.message, reason, "dropped")

    def _log_rejected(
        self, message: AbstractIncomingMessage, reason: str, action: str, *, detail: str = ""
    ) -> None:
        # Sizes, names and clipped ids only: never the body, which may be megabytes
        # long or carry what a log must not (customer data, tokens).
        log.warning(
            "message rejected",
            queue=self._queue,
            reason=reason,
            action=action,
            size=len(message.body),
            amqp_message_id=clip(message.message_id or ""),
            amqp_type=clip(message.type or ""),
            detail=detail,
        )
        metrics.REJECTED.labels(self._queue, reason, action).inc()

    async def _apply_batch(self, batch: Sequence[_Delivery]) -> _Applied:
        """Apply a batch in one transaction; what became of its messages."""
        envelopes = [d.envelope for d in batch]
        backoff = 0.1
        while True:
            applied = _Applied()
            try:
                async with self._sessions() as session, session.begin():
                    handing = self._handoff.start(session) if self._handoff else None
                    applied.fresh = await self._inbox.record_many(
                        session, envelopes, [d.digest for d in batch]
                    )
                    seen = {e.message_id for e in envelopes if e.message_id not in applied.fresh}
                    applied.recorded = await self._inbox.recorded_digests(session, seen)
                    # Each new message once, as first delivered (the one to be applied).
                    todo: dict[uuid.UUID, Envelope] = {}
                    for envelope in envelopes:
                        if envelope.message_id in applied.fresh:
                            todo.setdefault(envelope.message_id, envelope)
                    if todo and self._prepare is not None:
                        await self._prepare(session, list(todo.values()))
                    # A message delivered twice into one batch is applied once.
                    pending = set(applied.fresh)
                    for delivery in batch:
                        if delivery.envelope.message_id in pending:
                            pending.discard(delivery.envelope.message_id)
                            outcome = await self._handle_in_span(session, delivery)
                            if outcome is not None:
                                applied.dropped[delivery.envelope.message_id] = outcome
                if self._handoff is not None and handing is not None:
                    # Committed: the next hop starts now, not when a relay wakes.
                    await self._handoff.publish(handing)
                return applied
            except _Refused:
                raise
            except Exception as exc:
                held = await self._hold(exc, backoff, count=len(batch))
                if held is None:
                    raise _BatchFailed from exc
                backoff = held

    async def _handle_in_span(self, session: AsyncSession, delivery: _Delivery) -> Dropped | None:
        envelope = delivery.envelope
        with self._bound(envelope), self._span(delivery.message, envelope):
            try:
                return await self._handler(session, envelope)
            except Unprocessable as exc:
                raise _Refused(delivery, Refusal(exc.reason, clip(str(exc)))) from exc

    def _bound(self, envelope: Envelope) -> AbstractContextManager[object]:
        """Log context naming one message."""
        return structlog.contextvars.bound_contextvars(
            message_id=str(envelope.message_id),
            message_type=envelope.message_type,
            saga_id=str(envelope.saga_id),
            correlation_id=str(envelope.correlation_id),
            queue=self._queue,
        )

    async def _process_one(self, delivery: _Delivery) -> None:
        with (
            self._bound(delivery.envelope),
            self._span(delivery.message, delivery.envelope) as span,
        ):
            result = await self._apply(delivery)
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

    async def _apply(self, delivery: _Delivery) -> str:
        with metrics.CONSUME_SECONDS.labels(self._queue).time():
            result = await self._apply_once(delivery)
        metrics.CONSUMED.labels(self._queue, result).inc()
        return result

    async def _apply_once(self, delivery: _Delivery) -> str:
        message, envelope = delivery.message, delivery.envelope
        backoff = 0.1
        while True:
            outcome: Dropped | None = None
            recorded: dict[uuid.UUID, bytes] = {}
            try:
                async with self._sessions() as session, session.begin():
                    handing = self._handoff.start(session) if self._handoff else None
                    fresh = await self._inbox.record(session, envelope, delivery.digest)
                    if fresh:
                        if self._prepare is not None:
                            await self._prepare(session, [envelope])
                        outcome = await self._handler(session, envelope)
                    else:
                        recorded = await self._inbox.recorded_digests(
                            session, [envelope.message_id]
                        )
                break
            except Unprocessable as exc:
                await self._dead_letter(message, Refusal(exc.reason, clip(str(exc))))
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
        if self._handoff is not None and handing is not None:
            await self._handoff.publish(handing)
        await _settle(message.ack())
        result: _Result = (
            (outcome or "applied")
            if fresh
            else _repeat(delivery, recorded.get(envelope.message_id))
        )
        if isinstance(result, Dropped):
            self._dropped(delivery, result.reason)
        elif result == _DUPLICATE:
            log.info("duplicate message dropped")
        return _consumed(result)

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


class _Refused(Exception):
    """The handler found one message of a batch unprocessable (the batch rolled back)."""

    def __init__(self, delivery: _Delivery, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.delivery = delivery
        self.refusal = refusal


@dataclass(frozen=True, slots=True, eq=False)
class _Delivery:
    """A delivery admitted for applying: its envelope and the digest of its body.

    Compared by identity: one batch may hold the same message twice.
    """

    message: AbstractIncomingMessage
    envelope: Envelope
    digest: bytes


# A message id already applied: the same content (a redelivery), or other content (an
# id reused, dropped as a conflict).
_DUPLICATE = "duplicate"
_CONFLICT = Dropped("conflicting_duplicate")
_Result = str | Dropped  # "applied", _DUPLICATE, or what was dropped and why


@dataclass(slots=True)
class _Applied:
    """What a batch's transaction found: the ids new to the inbox, the digests recorded
    for the others, and what the handler dropped."""

    fresh: set[uuid.UUID] = field(default_factory=set)
    recorded: dict[uuid.UUID, bytes] = field(default_factory=dict)
    dropped: dict[uuid.UUID, Dropped] = field(default_factory=dict)

    def results(self, batch: Sequence[_Delivery]) -> list[_Result]:
        """One result per delivery, in order. A message delivered twice into the batch
        was applied for its first delivery; its second is compared with that one."""
        first: dict[uuid.UUID, bytes] = {}
        results: list[_Result] = []
        for delivery in batch:
            message_id = delivery.envelope.message_id
            if message_id not in self.fresh:
                results.append(_repeat(delivery, self.recorded.get(message_id)))
            elif message_id in first:
                results.append(_repeat(delivery, first[message_id]))
            else:
                first[message_id] = delivery.digest
                results.append(self.dropped.get(message_id) or "applied")
        return results


def _repeat(delivery: _Delivery, recorded: bytes | None) -> _Result:
    """A message id seen before: a redelivery, or other content under a reused id.

    Rows recorded before digests were kept cannot tell; they count as redeliveries.
    """
    return _CONFLICT if recorded is not None and recorded != delivery.digest else _DUPLICATE


def _consumed(result: _Result) -> str:
    """The ``result`` label of ``sagaway_messages_consumed_total``."""
    return "dropped" if isinstance(result, Dropped) else result
