"""A pure, synchronous harness that drives one saga through the real state machine.

No database, no broker, no sleeping: the test plays every participant (scripted
replies), the sweeper (a clock it moves) and the operator (retry, abort). Commands are
built by the definition's own payload builders from the saga's data, and a succeeded
reply's ``output`` is merged into that data, as the coordinator does; so a test sees exactly
what each participant would receive.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from sagaway.orchestrator.application import SagaApp, default_retry_policy
from sagaway.orchestrator.coordinator import LocalResult, SagaContext, saga_context
from sagaway.orchestrator.dsl import RetryPolicy
from sagaway.orchestrator.history import HistoryEntry
from sagaway.orchestrator.participants import Reply, Succeeded, reply_parts
from sagaway.orchestrator.protocol import ReplyBody, merged_output, reply_payload
from sagaway.orchestrator.state import SagaState
from sagaway.orchestrator.state_machine import (
    AbortRequested,
    Event,
    LocalCompleted,
    ReplyReceived,
    RetryRequested,
    RunLocal,
    SagaMachine,
    SendCommand,
    Transition,
    WokeUp,
)
from sagaway.outbox.settings import Settings

LocalScript = Reply | LocalResult | Callable[[SagaContext], Reply | LocalResult]
"""What a local step answers in the harness: a reply (``Succeeded()``, ``Rejected(reason)``,
``Failed(reason)``), a :class:`LocalResult`, or a function of the saga's context."""

DEFAULT_RETRY = default_retry_policy(Settings.model_construct())
"""The retry defaults of a fresh installation (``SAGAWAY_STEP_*`` unset), read from the
settings' own defaults and not the environment, so a test does not depend on where it
runs."""

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
"""Where the harness's clock starts."""


class HarnessError(AssertionError):
    """The test asked for something the saga cannot do right now, or scripted a reply
    or built a command the real system would refuse."""


@dataclass(frozen=True, slots=True)
class SentCommand:
    """A command the orchestrator sent, as its participant would receive it.

    Attributes:
        participant: the participant it goes to.
        command: its message type (``ReserveInventory``).
        payload: what the definition's payload builder made of the saga's data.
        attempt: 1 for the first attempt, 2 for the first retry, …
        purpose: ``"action"``, ``"compensation"`` or ``"epilogue"``.
        step: the step it belongs to (None in the epilogue).
        message_id: the message's id (a reply names it as its cause).
    """

    participant: str
    command: str
    payload: dict[str, Any]
    attempt: int
    purpose: str
    step: str | None
    message_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class LocalCall:
    """A local step the orchestrator ran, and what it answered."""

    handler: str
    purpose: str
    step: str | None
    outcome: str
    reason: str | None


class SagaHarness:
    """Drives one saga of ``app`` through :class:`SagaMachine`, synchronously.

    Args:
        app: the application that defines the saga.
        saga_type: the saga to drive (``trip_booking``).
        data: the saga's data, as ``start_saga`` would receive it (JSON values).
        retry: the default retry policy (the ``SAGAWAY_STEP_*`` settings) of steps that
            set none of their own; the fields it leaves unset come from
            :data:`DEFAULT_RETRY`.
        local_steps: local handler name → what it answers; an unscripted local step
            succeeds. Local handlers themselves are not run (they need a database).
        saga_id: the saga's id (default: a new one).

    Example::

        h = SagaHarness(app, "trip_booking", data=TRIP)
        cmd = h.start()
        assert cmd.command == "ReserveFlight"
        h.reply(Succeeded(output={"flight_ref": "F1"}))
        h.advance(31)  # the hotel never answers: its timeout fires, then the retry
        assert h.pending.attempt == 2
    """

    def __init__(
        self,
        app: SagaApp,
        saga_type: str,
        *,
        data: Mapping[str, Any],
        retry: RetryPolicy | None = None,
        local_steps: Mapping[str, LocalScript] | None = None,
        saga_id: uuid.UUID | None = None,
    ) -> None:
        if saga_type not in app.definitions:
            raise HarnessError(
                f"application {app.name} has no saga {saga_type!r} "
                f"(it has {', '.join(app.definitions)})"
            )
        unknown = sorted(set(local_steps or {}) - set(app.local_steps))
        if unknown:
            raise HarnessError(f"application {app.name} has no local steps {unknown}")
        self.app = app
        self.saga_type = saga_type
        defaults = (retry or RetryPolicy()).resolve(DEFAULT_RETRY)
        self.machine = SagaMachine(app.definitions[saga_type], RetryPolicy(**asdict(defaults)))
        self.saga_id = saga_id or uuid.uuid4()
        self.data: dict[str, Any] = _json(data, "saga data")
        """The saga's data, with every succeeded step's output merged in."""
        self.now = EPOCH
        """The harness's clock; only :meth:`advance` moves it."""
        self.sent: list[SentCommand] = []
        """Every command sent, in order."""
        self.local_calls: list[LocalCall] = []
        """Every local step run, in order."""
        self.notes: list[HistoryEntry] = []
        """The state machine's history entries (typed: kind, step, attempt, outcome,
        reason, …; ``describe(entry)`` renders one as a sentence), in order."""
        self._locals: dict[str, LocalScript] = dict(local_steps or {})
        self._state: SagaState | None = None
        self._by_id: dict[uuid.UUID, SentCommand] = {}

    # -- what a test reads

    @property
    def state(self) -> SagaState:
        """The state machine's state of the saga."""
        if self._state is None:
            raise HarnessError("the saga has not started: call start() first")
        return self._state

    @property
    def status(self) -> str:
        """The saga's status (``RUNNING``, ``COMPENSATING``, ``COMPLETED``, ``COMPENSATED``,
        ``FAILED``)."""
        return self.state.status.value

    @property
    def steps(self) -> dict[str, str]:
        """Step name → its status (``PENDING``, ``SUCCEEDED``, ``COMPENSATED``, …)."""
        return {s.name: s.status.value for s in self.state.steps}

    @property
    def failure_reason(self) -> str | None:
        """Why the saga did not complete (a rejection's reason, an exhausted retry)."""
        return self.state.failure_reason

    @property
    def pending(self) -> SentCommand | None:
        """The command whose reply the saga awaits, if any."""
        if self._state is None or self._state.pending is None:
            return None
        return self._by_id[self._state.pending]

    @property
    def wake_at(self) -> datetime | None:
        """When the sweeper would look at the saga next (a deadline or a backoff's end)."""
        return self.state.wake_at

    # -- what a test does

    def start(self) -> SentCommand | None:
        """Start the saga; returns its first command (None if it finished on local
        steps alone)."""
        if self._state is not None:
            raise HarnessError("the saga has already started")
        return self._drive(self.machine.start(now=self.now, next_message_id=uuid.uuid4()))

    def reply(self, reply: Reply, *, to: SentCommand | None = None) -> SentCommand | None:
        """Answer the pending command (or ``to``, an earlier one: a late reply, which
        the saga ignores) as its participant would; returns the next command sent, if
        any.

        Raises:
            HarnessError: nothing awaits a reply, or the reply is one the coordinator would
                refuse (a type the participant does not answer with, a reason longer
                than the protocol allows, an output that is not JSON).
        """
        command = to or self.pending
        if command is None:
            raise HarnessError(f"no command awaits a reply (saga is {self.status})")
        payload, body = self._reply_payload(command, reply)
        transition = self.machine.apply(
            self.state,
            ReplyReceived(
                now=self.now,
                next_message_id=uuid.uuid4(),
                causation_id=command.message_id,
                outcome=body.outcome,
                reason=body.reason,
            ),
        )
        if transition.ignored:
            self.notes.extend(transition.notes)
            return None
        merged = merged_output(self.data, body, payload)
        if merged is not None:
            self.data = merged
        return self._drive(transition)

    def advance(self, seconds: float) -> SentCommand | None:
        """Move the clock ``seconds`` on; every deadline or backoff that falls due on
        the way fires at its time, as a sweeper that never lags would fire it. Returns
        the last command sent meanwhile (a retry), if any."""
        if seconds < 0:
            raise HarnessError("the clock only moves forward")
        target = self.now + timedelta(seconds=seconds)
        last: SentCommand | None = None
        while (
            self.state.status.is_active
            and self.state.wake_at is not None
            and self.state.wake_at <= target
        ):
            self.now = max(self.now, self.state.wake_at)
            sent = self._drive(
                self.machine.apply(self.state, WokeUp(now=self.now, next_message_id=uuid.uuid4()))
            )
            last = sent or last
        self.now = target
        return last

    def retry(self) -> SentCommand | None:
        """An operator's retry of a FAILED saga (a fresh attempt budget); returns the
        command sent. Raises ``InvalidRequest`` when the saga is not FAILED."""
        return self._operator(RetryRequested(now=self.now, next_message_id=uuid.uuid4()))

    def abort(self) -> SentCommand | None:
        """An operator's abort of a FAILED saga (compensate now); returns the command
        sent. Raises ``InvalidRequest`` past the pivot or when not FAILED."""
        return self._operator(AbortRequested(now=self.now, next_message_id=uuid.uuid4()))

    # -- the coordinator's loop, without I/O

    def _operator(self, event: Event) -> SentCommand | None:
        return self._drive(self.machine.apply(self.state, event))

    def _drive(self, transition: Transition) -> SentCommand | None:
        """Run local steps until the saga waits for a reply or ends (the coordinator's
        ``_advance``); returns the command sent, if any."""
        sent: SentCommand | None = None
        while True:
            self._state = transition.state
            self.notes.extend(transition.notes)
            local: RunLocal | None = None
            for effect in transition.effects:
                if isinstance(effect, SendCommand):
                    sent = self._send(effect)
                else:
                    local = effect
            if local is None:
                return sent
            result = self._run_local(local)
            transition = self.machine.apply(
                transition.state,
                LocalCompleted(
                    now=self.now,
                    next_message_id=uuid.uuid4(),
                    outcome=result.outcome,
                    reason=result.reason,
                ),
            )

    def _context(self) -> SagaContext:
        return saga_context(
            saga_id=self.saga_id,
            saga_type=self.saga_type,
            correlation_id=self.saga_id,
            data=self.data,
            state=self.state,
        )

    def _send(self, effect: SendCommand) -> SentCommand:
        action = effect.action
        payload = _json(action.payload(self._context().data), f"{action.command} payload")
        model = self.app.participant(action.participant).routes[action.command].model
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            # The participant would refuse it as invalid_payload: the saga would time
            # out on every attempt. Better to say so here.
            raise HarnessError(
                f"{action.command} payload does not fit {model.__name__}: {exc}"
            ) from exc
        command = SentCommand(
            participant=action.participant,
            command=action.command,
            payload=payload,
            attempt=effect.attempt,
            purpose=effect.purpose,
            step=effect.step,
            message_id=effect.message_id,
        )
        self.sent.append(command)
        self._by_id[command.message_id] = command
        return command

    def _run_local(self, effect: RunLocal) -> LocalResult:
        handler = effect.local.handler
        script = self._locals.get(handler, Succeeded())
        answer = script(self._context()) if callable(script) else script
        result = _local_result(handler, answer)
        self.local_calls.append(
            LocalCall(
                handler=handler,
                purpose=effect.purpose,
                step=effect.step,
                outcome=result.outcome.value,
                reason=result.reason,
            )
        )
        return result

    def _reply_payload(
        self, command: SentCommand, reply: Reply
    ) -> tuple[dict[str, Any], ReplyBody]:
        """The reply's payload as the participant's dispatcher writes it, and its body
        as the coordinator reads it."""
        route = self.app.participant(command.participant).routes[command.command]
        reply_type = route.default_reply_type(reply)
        # A reply type the test names must be one the coordinator accepts; an unnamed one is
        # the test's shorthand (the harness scripts a participant's decision, not its
        # message type), so it is not held to the participant's naming.
        if reply.reply_type is not None and reply_type not in route.reply_types:
            raise HarnessError(
                f"{command.command} is not answered with {reply_type} "
                f"(its replies: {', '.join(route.reply_types)})"
            )
        payload = _json(reply_payload(*reply_parts(reply)), f"{reply_type} payload")
        try:
            return payload, ReplyBody.model_validate(payload)
        except ValidationError as exc:
            raise HarnessError(f"{reply_type} is not a valid reply: {exc}") from exc


def _local_result(handler: str, answer: Reply | LocalResult) -> LocalResult:
    if isinstance(answer, LocalResult):
        return answer
    if isinstance(answer, Succeeded) and answer.output:
        raise HarnessError(f"local step {handler}: a local step has no output")
    outcome, reason, _ = reply_parts(answer)
    return LocalResult(outcome, reason)


def _json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A plain JSON copy of ``value``, as it would be stored or sent."""
    try:
        plain = json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"{what} must be JSON values: {exc}") from exc
    assert isinstance(plain, dict)
    return plain


__all__ = [
    "DEFAULT_RETRY",
    "EPOCH",
    "HarnessError",
    "LocalCall",
    "LocalScript",
    "SagaHarness",
    "SentCommand",
]
