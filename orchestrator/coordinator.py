"""The saga coordinator: applies events to sagas inside a transaction the caller owns.

It loads a saga under a row lock, lets the pure state machine decide, runs local
actions, writes commands to the orchestrator's outbox and the history, and saves the
new state. It never commits: the caller (the reply consumer, the sweeper, an HTTP
handler) owns the transaction, so the state change and its commands commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from opentelemetry import trace
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator import metrics
from sagaway.orchestrator.definition_compat import realigned, unfinishable_reason
from sagaway.orchestrator.dsl import Local, RetryPolicy, SagaDefinition
from sagaway.orchestrator.history import HistoryEntry, HistoryKind
from sagaway.orchestrator.protocol import ReplyBody, merged_output
from sagaway.orchestrator.repository import SagaRecord, SagaRepository
from sagaway.orchestrator.state import Outcome, SagaState
from sagaway.orchestrator.state_machine import (
    AbortRequested,
    Event,
    InvalidRequest,
    LocalCompleted,
    ReplyReceived,
    RetryRequested,
    RunLocal,
    SagaMachine,
    SendCommand,
    Transition,
    WokeUp,
)
from sagaway.outbox.consumer import Dropped
from sagaway.outbox.deferred import flush_deferred
from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.errors import Unprocessable
from sagaway.outbox.tracing import extract
from sagaway.outbox.writer import OutboxWriter

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

# How long the sweeper leaves a saga it may not drive (its definition changed under it)
# before looking again: long enough not to flood the log, short enough to notice a
# deployment that restored the definition.
REFUSED_RECHECK = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SagaContext:
    """What a local action or a payload builder may read of a saga."""

    saga_id: uuid.UUID
    saga_type: str
    correlation_id: uuid.UUID
    data: Mapping[str, Any]
    rejection_reason: str | None


@dataclass(frozen=True, slots=True)
class LocalResult:
    """The result of a local action."""

    outcome: Outcome
    reason: str | None = None


LocalHandler = Callable[[AsyncSession, SagaContext], Awaitable[LocalResult]]
Clock = Callable[[], datetime]


class SagaNotFound(Exception):
    """No saga has that id."""


@dataclass(frozen=True, slots=True)
class Routing:
    """Where commands go: ``exchange`` with the participant's name as routing key."""

    commands_exchange: str


class SagaCoordinator:
    """Applies events to sagas of the registered definitions."""

    def __init__(
        self,
        *,
        definitions: Mapping[str, SagaDefinition],
        defaults: RetryPolicy,
        local_handlers: Mapping[str, LocalHandler],
        outbox: OutboxWriter,
        routing: Routing,
        repository: SagaRepository | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        reply_types: Collection[str] | None = None,
    ) -> None:
        self._machines = {name: SagaMachine(d, defaults) for name, d in definitions.items()}
        self._locals = dict(local_handlers)
        missing = {
            a.handler
            for d in definitions.values()
            for _, a in d.actions()
            if isinstance(a, Local) and a.handler not in self._locals
        }
        if missing:
            raise ValueError(f"no local handler registered for {sorted(missing)}")
        self._outbox = outbox
        self._routing = routing
        self._repo = repository or SagaRepository()
        self._clock = clock
        # The message types participants answer with; None accepts any type whose
        # payload is a reply.
        self._reply_types = None if reply_types is None else frozenset(reply_types)

    @property
    def repository(self) -> SagaRepository:
        """The saga repository the coordinator writes through."""
        return self._repo

    def machine(self, saga_type: str) -> SagaMachine | None:
        """The state machine of a saga type (None for a type no longer defined)."""
        return self._machines.get(saga_type)

    async def start(
        self,
        session: AsyncSession,
        *,
        saga_type: str,
        saga_id: uuid.UUID,
        correlation_id: uuid.UUID,
        data: dict[str, Any],
        order_id: uuid.UUID | None = None,
    ) -> SagaState:
        """Create a saga and write its first command, in the caller's transaction.

        The saga's trace is the caller's current one (the HTTP request's span, which is
        tagged with the saga id here so that it can be found with the saga's others).
        """
        trace.get_current_span().set_attribute("saga_id", str(saga_id))
        now = self._clock()
        machine = self._machines[saga_type]
        transition = machine.start(now=now, next_message_id=uuid.uuid4())
        definition = machine.definition
        record = SagaRecord(
            id=saga_id,
            saga_type=saga_type,
            order_id=order_id,
            correlation_id=correlation_id,
            data=data,
            state=transition.state,
            version=0,
            created_at=now,
            updated_at=now,
            definition_version=definition.version,
            definition_fingerprint=definition.fingerprint,
            definition_shape=definition.shape,
        )
        state, messages, history = await self._advance(
            session, record, transition, now, starting=True
        )
        # One insert with the state after the first moves (the row must precede its
        # history for the foreign key; local actions do not read the saga row).
        await self._repo.add(session, replace(record, state=state))
        await self._persist(session, record, state, messages, history, now, update=False)
        metrics.observe_transition(saga_type, None, state)
        return state

    async def prepare_replies(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        """Lock the sagas of a batch of replies at once (called by the reply consumer
        before ``handle_reply`` runs for each)."""
        await self._repo.lock_many(session, [e.saga_id for e in envelopes])

    def screen_reply(self, envelope: Envelope) -> None:
        """Refuse, before any transaction, a message that is no reply at all: a type no
        participant answers with, or a payload without the reply protocol's outcome.

        Raises:
            Unprocessable: with reason ``unknown_type`` or ``invalid_payload``.
        """
        self._reply_body(envelope)

    async def handle_reply(self, session: AsyncSession, envelope: Envelope) -> Dropped | None:
        """Apply a participant's reply (called by the reply consumer).

        A reply for a saga that does not exist is dropped: it never creates one.
        """
        body = self._reply_body(envelope)
        record = await self._repo.get(session, envelope.saga_id, for_update=True)
        if record is None:
            metrics.REPLIES.labels("unknown_saga").inc()
            return Dropped("unknown_saga")
        now = self._clock()
        event = ReplyReceived(
            now=now,
            next_message_id=uuid.uuid4(),
            causation_id=envelope.causation_id,
            outcome=body.outcome,
            reason=body.reason,
        )
        # A finished saga ignores any reply (recorded as stale below), whatever its
        # definition has become since.
        refusal = self.refusal(record) if record.state.status.is_active else None
        if refusal is not None:
            log.error("reply refused: saga not driven", saga_id=str(record.id), reason=refusal)
            metrics.REPLIES.labels("refused").inc()
            # Dead-lettered, not dropped: once the definition is put back, the reply
            # can be moved back to the queue and the saga goes on.
            raise Unprocessable(
                f"saga {record.id} is not driven: {refusal}", reason="definition_changed"
            )
        if record.state.status.is_active:
            record = await self._adopted(session, record)
        received = HistoryEntry(
            kind=HistoryKind.REPLY_RECEIVED,
            step=record.state.current_step,
            attempt=record.state.attempt,
            outcome=body.outcome.value,
            reason=body.reason,
            message_type=envelope.message_type,
            message_id=envelope.message_id,
        )
        transition = self._machines[record.saga_type].apply(record.state, event)
        if transition.ignored:
            log.info("stale reply ignored", reply_to=str(envelope.causation_id))
            metrics.REPLIES.labels("stale").inc()
            stale = HistoryEntry(
                kind=HistoryKind.STALE_REPLY,
                outcome=body.outcome.value,
                reason=body.reason,
                message_type=envelope.message_type,
                message_id=envelope.message_id,
            )
            await self._repo.record(session, record.id, [stale], now)
            return None
        metrics.REPLIES.labels("applied").inc()
        merged = merged_output(record.data, body, envelope.payload)
        if merged is not None:
            record = replace(record, data=merged)
            await self._repo.set_data(session, record)
        await self._repo.record(session, record.id, [received], now)
        await self._drive(session, record, transition, now)
        return None

    def _reply_body(self, envelope: Envelope) -> ReplyBody:
        if self._reply_types is not None and envelope.message_type not in self._reply_types:
            raise Unprocessable(
                f"{envelope.message_type} is not a reply type", reason="unknown_type"
            )
        try:
            return ReplyBody.model_validate(envelope.payload)
        except ValidationError as exc:
            raise Unprocessable(
                f"reply payload is not a reply: {exc.error_count()} errors",
                reason="invalid_payload",
            ) from exc

    async def wake(self, session: AsyncSession, saga_id: uuid.UUID) -> None:
        """Handle an expired deadline or finished backoff of a saga claimed by the sweeper."""
        record = await self._repo.get(session, saga_id, for_update=True)
        if record is None:
            return
        now = self._clock()
        refusal = self.refusal(record)
        if refusal is not None:
            await self._postpone_refused(session, record, refusal, now)
            return
        record = await self._adopted(session, record)
        transition = self._machines[record.saga_type].apply(
            record.state, WokeUp(now=now, next_message_id=uuid.uuid4())
        )
        if not transition.ignored:
            with _saga_span("saga.wake", record):
                await self._drive(session, record, transition, now)

    async def retry(self, session: AsyncSession, saga_id: uuid.UUID, *, actor: str) -> SagaState:
        """Resume a FAILED saga; raises InvalidRequest when it is not FAILED."""
        return await self._operator(
            session, saga_id, RetryRequested, HistoryKind.ADMIN_RETRY, actor
        )

    async def abort(self, session: AsyncSession, saga_id: uuid.UUID, *, actor: str) -> SagaState:
        """Compensate a FAILED saga now; raises InvalidRequest past the pivot."""
        return await self._operator(
            session, saga_id, AbortRequested, HistoryKind.ADMIN_ABORT, actor
        )

    async def _operator(
        self,
        session: AsyncSession,
        saga_id: uuid.UUID,
        event_type: type[RetryRequested] | type[AbortRequested],
        kind: HistoryKind,
        actor: str,
    ) -> SagaState:
        record = await self._repo.get(session, saga_id, for_update=True)
        if record is None:
            raise SagaNotFound(str(saga_id))
        refusal = self.refusal(record)
        if refusal is not None:
            raise InvalidRequest(f"saga cannot run under its type's current definition: {refusal}")
        record = await self._adopted(session, record)
        now = self._clock()
        event: Event = event_type(now=now, next_message_id=uuid.uuid4())
        transition = self._machines[record.saga_type].apply(record.state, event)
        with _saga_span(f"saga.{kind.removeprefix('admin_')}", record, link_current=True):
            await self._repo.record(session, record.id, [HistoryEntry(kind=kind, actor=actor)], now)
            return await self._drive(session, record, transition, now)

    async def _drive(
        self,
        session: AsyncSession,
        record: SagaRecord,
        transition: Transition,
        now: datetime,
    ) -> SagaState:
        """Carry out a transition's effects, then save the final state."""
        state, messages, history = await self._advance(session, record, transition, now)
        await self._persist(session, record, state, messages, history, now, update=True)
        metrics.observe_transition(record.saga_type, record.state, state)
        return state

    async def _advance(
        self,
        session: AsyncSession,
        record: SagaRecord,
        transition: Transition,
        now: datetime,
        *,
        starting: bool = False,
    ) -> tuple[SagaState, list[OutgoingMessage], list[HistoryEntry]]:
        """Run local actions until the saga waits for a reply or ends; collect the
        commands to send and the history to record."""
        machine = self._machines[record.saga_type]
        history: list[HistoryEntry] = []
        messages: list[OutgoingMessage] = []
        while True:
            history.extend(transition.notes)
            local: RunLocal | None = None
            for effect in transition.effects:
                if isinstance(effect, SendCommand):
                    messages.append(self._command(record, transition.state, effect))
                    if effect.attempt > 1:
                        metrics.RETRIES.labels(record.saga_type, effect.step or "epilogue").inc()
                    history.append(
                        HistoryEntry(
                            kind=HistoryKind.COMMAND_SENT,
                            step=effect.step,
                            attempt=effect.attempt,
                            purpose=effect.purpose,
                            message_type=effect.action.command,
                            participant=effect.action.participant,
                            message_id=effect.message_id,
                        )
                    )
                else:
                    local = effect
            if local is None:
                return transition.state, messages, history
            if starting:
                # The caller's rows may still be deferred to the commit (an order placed
                # in this transaction): a local step must see them. That is a second
                # statement, atomic with the rest only inside a real transaction.
                if session.get_bind().get_execution_options().get("isolation_level") == (
                    "AUTOCOMMIT"
                ):
                    raise RuntimeError(
                        f"saga {record.saga_type} starts with a local step: start it in a "
                        "transaction, not an autocommit session"
                    )
                await flush_deferred(session)
                starting = False
            result = await self._locals[local.local.handler](
                session, self._context(record, transition.state)
            )
            history.append(
                HistoryEntry(
                    kind=HistoryKind.LOCAL_ACTION,
                    step=local.step,
                    attempt=transition.state.attempt,
                    purpose=local.purpose,
                    outcome=result.outcome.value,
                    reason=result.reason,
                    handler=local.local.handler,
                )
            )
            transition = machine.apply(
                transition.state,
                LocalCompleted(
                    now=now,
                    next_message_id=uuid.uuid4(),
                    outcome=result.outcome,
                    reason=result.reason,
                ),
            )

    async def _persist(
        self,
        session: AsyncSession,
        record: SagaRecord,
        state: SagaState,
        messages: list[OutgoingMessage],
        history: list[HistoryEntry],
        now: datetime,
        *,
        update: bool,
    ) -> None:
        await self._outbox.add(session, *messages)
        if update:
            await self._repo.save(session, record, state, now)
        await self._repo.record(session, record.id, history, now)
        log.info(
            "saga advanced",
            saga_status=state.status.value,
            step=state.current_step,
            commands=[m.envelope.message_type for m in messages],
        )

    def refusal(self, record: SagaRecord) -> str | None:
        """Why the saga may not be driven under its type's current definition, if so
        (a step it ran or is at was removed or moved, or its type is gone)."""
        machine = self._machines.get(record.saga_type)
        if machine is not None and (
            record.definition_fingerprint == machine.definition.fingerprint
        ):
            return None
        return unfinishable_reason(
            None if machine is None else machine.definition,
            saga_type=record.saga_type,
            state=record.state,
            recorded_shape=record.definition_shape,
        )

    async def _adopted(self, session: AsyncSession, record: SagaRecord) -> SagaRecord:
        """The saga moved onto its type's current definition (one :meth:`refusal` accepts):
        the steps it reached stay, the ones ahead are the current ones. The definition
        is written now, the realigned steps with the saga's next state."""
        definition = self._machines[record.saga_type].definition
        if record.definition_fingerprint == definition.fingerprint:
            return record
        log.info(
            "saga moves to its definition's current version",
            saga_id=str(record.id),
            saga_type=record.saga_type,
            recorded_version=record.definition_version,
            version=definition.version,
        )
        adopted = replace(
            record,
            state=realigned(record.state, definition),
            definition_version=definition.version,
            definition_fingerprint=definition.fingerprint,
            definition_shape=definition.shape,
        )
        await self._repo.set_definition(session, adopted)
        return adopted

    async def _postpone_refused(
        self, session: AsyncSession, record: SagaRecord, refusal: str, now: datetime
    ) -> None:
        """Leave a saga the sweeper may not drive as it is, and look again later."""
        log.error(
            "saga not driven: its definition changed under it",
            saga_id=str(record.id),
            saga_type=record.saga_type,
            recorded_version=record.definition_version,
            reason=refusal,
        )
        state = replace(record.state, wake_at=now + REFUSED_RECHECK)
        await self._repo.save(session, record, state, now)
        entry = HistoryEntry(
            kind=HistoryKind.DEFINITION_REFUSED, step=record.state.current_step, reason=refusal
        )
        await self._repo.record(session, record.id, [entry], now)

    def _command(
        self, record: SagaRecord, state: SagaState, effect: SendCommand
    ) -> OutgoingMessage:
        payload = effect.action.payload(self._context(record, state).data)
        envelope = Envelope(
            message_id=effect.message_id,
            message_type=effect.action.command,
            saga_id=record.id,
            correlation_id=record.correlation_id,
            causation_id=None,
            payload=payload,
        )
        return OutgoingMessage(
            envelope=envelope,
            exchange=self._routing.commands_exchange,
            routing_key=effect.action.participant,
        )

    @staticmethod
    def _context(record: SagaRecord, state: SagaState) -> SagaContext:
        return saga_context(
            saga_id=record.id,
            saga_type=record.saga_type,
            correlation_id=record.correlation_id,
            data=record.data,
            state=state,
        )


def saga_context(
    *,
    saga_id: uuid.UUID,
    saga_type: str,
    correlation_id: uuid.UUID,
    data: Mapping[str, Any],
    state: SagaState,
) -> SagaContext:
    """What local steps and payload builders see of a saga: its data plus ``saga_id``
    and ``rejection_reason``, the keys every builder may read."""
    return SagaContext(
        saga_id=saga_id,
        saga_type=saga_type,
        correlation_id=correlation_id,
        data={**data, "saga_id": str(saga_id), "rejection_reason": state.rejection_reason},
        rejection_reason=state.rejection_reason,
    )


@contextmanager
def _saga_span(name: str, record: SagaRecord, *, link_current: bool = False) -> Iterator[None]:
    """A span in the saga's own trace for work that no message of the saga caused.

    A deadline or an operator can resume a saga long after its last message; parenting
    the span on the trace the saga started in keeps the commands it sends (and all
    that follows) in that one trace. An operator's request is linked, not parent.
    """
    current = trace.get_current_span().get_span_context()
    links = [trace.Link(current)] if link_current and current.is_valid else None
    with tracer.start_as_current_span(
        name,
        context=extract(record.traceparent),
        links=links,
        attributes={"saga_id": str(record.id), "saga_type": record.saga_type},
    ):
        yield
