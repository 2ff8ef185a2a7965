"""The pure saga state machine: ``(state, event) -> (state, effects)``.

No I/O, no clock, no random ids: events carry the time and the id the next command
would get, so every transition is a deterministic function that tests in a few lines.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sagaway.orchestrator.dsl import Action, Local, ResolvedRetryPolicy, RetryPolicy, SagaDefinition
from sagaway.orchestrator.history import TIMEOUT, HistoryEntry, HistoryKind, Purpose
from sagaway.orchestrator.state import Outcome, Phase, SagaState, SagaStatus, StepState, StepStatus

# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened to a saga. ``next_message_id`` names the command the
    transition may send."""

    now: datetime
    next_message_id: uuid.UUID


@dataclass(frozen=True, slots=True, kw_only=True)
class Started(Event):
    """The saga was created."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyReceived(Event):
    """A participant answered the command ``causation_id``."""

    causation_id: uuid.UUID | None
    outcome: Outcome
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalCompleted(Event):
    """A local action ran in the saga's transaction."""

    outcome: Outcome
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WokeUp(Event):
    """``wake_at`` passed: a deadline expired or a backoff ended."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryRequested(Event):
    """An operator asked a FAILED saga to resume with a fresh attempt budget."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortRequested(Event):
    """An operator asked a FAILED saga to compensate now."""


# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True, kw_only=True)
class SendCommand:
    """Write this command to the outbox."""

    message_id: uuid.UUID
    action: Action
    step: str | None
    purpose: Purpose
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLocal:
    """Run this local action now, in the same transaction, and feed back its result."""

    local: Local
    step: str | None
    purpose: Purpose


Effect = SendCommand | RunLocal


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one event: the new state, what to do, and what to record."""

    state: SagaState
    effects: tuple[Effect, ...] = ()
    notes: tuple[HistoryEntry, ...] = ()
    ignored: bool = False


class InvalidRequest(Exception):
    """An operator request that the saga's state does not allow (answered 409)."""


# ---------------------------------------------------------------- the machine


class SagaMachine:
    """Walks one saga definition. Stateless; safe to share."""

    def __init__(self, definition: SagaDefinition, defaults: RetryPolicy) -> None:
        self.definition = definition
        self._policies = tuple(step.retry.resolve(defaults) for step in definition.steps)

    # -- entry points

    def start(self, *, now: datetime, next_message_id: uuid.UUID) -> Transition:
        """The first transition of a new saga."""
        state = SagaState(
            status=SagaStatus.RUNNING,
            phase=Phase.FORWARD,
            cursor=0,
            steps=tuple(StepState(name=s.name) for s in self.definition.steps),
        )
        started = HistoryEntry(kind=HistoryKind.SAGA_STARTED)
        return self._begin(state, Phase.FORWARD, 0, 1, now, next_message_id, (started,))

    def apply(self, state: SagaState, event: Event) -> Transition:
        """Apply ``event`` to ``state``."""
        if isinstance(event, ReplyReceived):
            return self._on_reply(state, event)
        if isinstance(event, LocalCompleted):
            return self._on_result(state, event.outcome, event.reason, event)
        if isinstance(event, WokeUp):
            return self._on_wake(state, event)
        if isinstance(event, RetryRequested):
            return self._on_retry(state, event)
        if isinstance(event, AbortRequested):
            return self._on_abort(state, event)
        raise TypeError(f"unknown event {type(event).__name__}")

    def passed_pivot(self, state: SagaState) -> bool:
        """True once the pivot step succeeded: the saga can only go forward."""
        pivot = self.definition.pivot_index
        return (
            pivot is not None
            # A saga started under an older definition may have fewer steps.
            and pivot < len(state.steps)
            and state.steps[pivot].status is StepStatus.SUCCEEDED
        )

    def policy_for(self, state: SagaState) -> ResolvedRetryPolicy:
        """The retry policy of whatever the cursor points at."""
        if state.phase is Phase.EPILOGUE:
            # The epilogue runs on behalf of the step that failed; use the last step's
            # policy, which for a notification is the patient one.
            return self._policies[-1]
        return self._policies[min(state.cursor, len(self._policies) - 1)]

    # -- event handlers

    def _on_reply(self, state: SagaState, event: ReplyReceived) -> Transition:
        if (
            not state.status.is_active
            or state.pending is None
            or event.causation_id != state.pending
        ):
            return Transition(state, ignored=True)
        return self._on_result(state, event.outcome, event.reason, event)

    def _on_result(
        self, state: SagaState, outcome: Outcome, reason: str | None, event: Event
    ) -> Transition:
        state = replace(state, pending=None, wake_at=None)
        if outcome is Outcome.SUCCEEDED:
            return self._succeeded(state, event)
        if outcome is Outcome.REJECTED and state.phase is Phase.FORWARD:
            return self._rejected(state, reason or "rejected", event)
        # A technical failure, or a compensation that was "rejected": compensations and
        # the epilogue must not fail for business reasons, so retry them.
        return self._technical_failure(state, outcome.value, reason or "technical error", event)

    def _on_wake(self, state: SagaState, event: WokeUp) -> Transition:
        if not state.status.is_active or state.wake_at is None or event.now < state.wake_at:
            return Transition(state, ignored=True)
        if state.pending is not None:
            timeout = self.policy_for(state).timeout_s
            return self._technical_failure(
                replace(state, pending=None, wake_at=None),
                TIMEOUT,
                f"no reply within {timeout:g}s",
                event,
            )
        return self._begin(
            replace(state, wake_at=None),
            state.phase,
            state.cursor,
            state.attempt + 1,
            event.now,
            event.next_message_id,
            (self._entry(HistoryKind.RETRY_STARTED, state, attempt=state.attempt + 1),),
        )

    def _on_retry(self, state: SagaState, event: RetryRequested) -> Transition:
        if state.status is not SagaStatus.FAILED:
            raise InvalidRequest(f"saga is {state.status}, only a FAILED saga can be retried")
        forward = state.phase is Phase.FORWARD
        status = SagaStatus.RUNNING if forward else SagaStatus.COMPENSATING
        # While compensating, the saga still ends short of completion for the business
        # reason it compensates for; only a forward retry clears the reason.
        state = replace(
            state, status=status, failure_reason=None if forward else state.rejection_reason
        )
        if state.phase is Phase.FORWARD:
            state = state.with_step(state.cursor, error=None)
        return self._begin(
            state,
            state.phase,
            state.cursor,
            1,
            event.now,
            event.next_message_id,
            (self._entry(HistoryKind.SAGA_RESUMED, state),),
        )

    def abort_refusal(self, state: SagaState) -> str | None:
        """Why an operator's abort of the saga would be refused, or None if accepted."""
        if state.status is not SagaStatus.FAILED:
            return f"saga is {state.status}, only a FAILED saga can be aborted"
        if self.passed_pivot(state):
            return "saga has passed its pivot and can no longer be compensated"
        if state.phase is not Phase.FORWARD:
            return "saga is already compensating; retry it instead"
        return None

    def _on_abort(self, state: SagaState, event: AbortRequested) -> Transition:
        refusal = self.abort_refusal(state)
        if refusal is not None:
            raise InvalidRequest(refusal)
        state = replace(state, rejection_reason="aborted", failure_reason="aborted")
        # The failed step is compensated too: an attempt that timed out may still have
        # taken effect, and compensations are idempotent (undoing nothing is a no-op
        # that also bars a late attempt from applying afterwards).
        return self._compensate_from(
            state,
            state.cursor,
            event,
            (self._entry(HistoryKind.SAGA_ABORTED, state),),
            include_failed=True,
        )

    # -- moves

    def _succeeded(self, state: SagaState, event: Event) -> Transition:
        i = state.cursor
        if state.phase is Phase.FORWARD:
            name = state.steps[i].name
            state = state.with_step(
                i, status=StepStatus.SUCCEEDED, finished_at=event.now, error=None
            )
            return self._begin(
                state,
                Phase.FORWARD,
                i + 1,
                1,
                event.now,
                event.next_message_id,
                (HistoryEntry(kind=HistoryKind.STEP_SUCCEEDED, step=name),),
            )
        if state.phase is Phase.COMPENSATE:
            name = state.steps[i].name
            state = state.with_step(i, status=StepStatus.COMPENSATED, finished_at=event.now)
            compensated = HistoryEntry(kind=HistoryKind.STEP_COMPENSATED, step=name)
            return self._compensate_from(state, i - 1, event, (compensated,))
        return self._begin(
            state,
            Phase.EPILOGUE,
            i + 1,
            1,
            event.now,
            event.next_message_id,
            (self._entry(HistoryKind.EPILOGUE_DONE, state),),
        )

    def _rejected(self, state: SagaState, reason: str, event: Event) -> Transition:
        i = state.cursor
        name = state.steps[i].name
        rejected = HistoryEntry(kind=HistoryKind.STEP_REJECTED, step=name, reason=reason)
        state = state.with_step(i, status=StepStatus.FAILED, finished_at=event.now, error=reason)
        if self.passed_pivot(state):
            # After the pivot nothing may be undone: an operator has to look.
            return self._fail(
                state,
                f"{name} rejected after the pivot: {reason}",
                (rejected,),
            )
        state = replace(state, rejection_reason=reason, failure_reason=reason)
        return self._compensate_from(state, i - 1, event, (rejected,))

    def _technical_failure(
        self, state: SagaState, outcome: str, error: str, event: Event
    ) -> Transition:
        policy = self.policy_for(state)
        name = self._name_at(state)
        label = name if state.phase is Phase.FORWARD else f"{name} ({state.phase})"
        note = self._entry(HistoryKind.ATTEMPT_FAILED, state, outcome=outcome, reason=error)
        if state.phase in (Phase.FORWARD, Phase.COMPENSATE):
            state = state.with_step(state.cursor, error=error)
        if state.attempt < policy.max_attempts:
            delay = policy.backoff_s(state.attempt)
            return Transition(
                replace(state, wake_at=event.now + timedelta(seconds=delay)),
                notes=(note, self._entry(HistoryKind.RETRY_SCHEDULED, state, delay_s=delay)),
            )
        if state.phase is Phase.FORWARD:
            state = state.with_step(state.cursor, status=StepStatus.FAILED, finished_at=event.now)
        reason = f"{label} failed after {state.attempt} attempts: {error}"
        return self._fail(state, reason, (note,))

    def _fail(self, state: SagaState, reason: str, notes: tuple[HistoryEntry, ...]) -> Transition:
        state = replace(
            state, status=SagaStatus.FAILED, failure_reason=reason, pending=None, wake_at=None
        )
        ended = HistoryEntry(
            kind=HistoryKind.SAGA_ENDED, outcome=SagaStatus.FAILED.value, reason=reason
        )
        return Transition(state, notes=(*notes, ended))

    def _compensate_from(
        self,
        state: SagaState,
        index: int,
        event: Event,
        notes: tuple[HistoryEntry, ...],
        *,
        include_failed: bool = False,
    ) -> Transition:
        """Compensate the completed steps at ``index`` and below, newest first."""
        undo = (
            {StepStatus.SUCCEEDED, StepStatus.FAILED} if include_failed else {StepStatus.SUCCEEDED}
        )
        for j in range(index, -1, -1):
            step = self.definition.steps[j]
            if state.steps[j].status in undo and step.compensation is not None:
                state = replace(state, status=SagaStatus.COMPENSATING)
                return self._begin(
                    state, Phase.COMPENSATE, j, 1, event.now, event.next_message_id, notes
                )
        state = replace(state, status=SagaStatus.COMPENSATING)
        return self._begin(state, Phase.EPILOGUE, 0, 1, event.now, event.next_message_id, notes)

    def _begin(
        self,
        state: SagaState,
        phase: Phase,
        index: int,
        attempt: int,
        now: datetime,
        message_id: uuid.UUID,
        notes: tuple[HistoryEntry, ...],
    ) -> Transition:
        """Start attempt ``attempt`` of the action at ``(phase, index)``."""
        state = replace(
            state, phase=phase, cursor=index, attempt=attempt, pending=None, wake_at=None
        )
        if phase is Phase.FORWARD and index >= len(self.definition.steps):
            done = replace(state, status=SagaStatus.COMPLETED, phase=Phase.DONE, cursor=index)
            ended = HistoryEntry(kind=HistoryKind.SAGA_ENDED, outcome=SagaStatus.COMPLETED.value)
            return Transition(done, notes=(*notes, ended))
        if phase is Phase.EPILOGUE and index >= len(self.definition.on_compensated):
            done = replace(state, status=SagaStatus.COMPENSATED, phase=Phase.DONE)
            ended = HistoryEntry(kind=HistoryKind.SAGA_ENDED, outcome=SagaStatus.COMPENSATED.value)
            return Transition(done, notes=(*notes, ended))

        step_name: str | None
        if phase is Phase.EPILOGUE:
            action = self.definition.on_compensated[index]
            step_name = None
            purpose = Purpose.EPILOGUE
        else:
            step = self.definition.steps[index]
            step_name = step.name
            s = state.steps[index]
            if phase is Phase.FORWARD:
                action = step.action
                purpose = Purpose.ACTION
                state = state.with_step(
                    index,
                    status=StepStatus.RUNNING,
                    attempts=s.attempts + 1,
                    started_at=s.started_at or now,
                    finished_at=None,
                )
            else:
                assert step.compensation is not None
                action = step.compensation
                purpose = Purpose.COMPENSATION
                state = state.with_step(
                    index,
                    status=StepStatus.COMPENSATING,
                    compensation_attempts=s.compensation_attempts + 1,
                )

        if isinstance(action, Local):
            return Transition(
                state, (RunLocal(local=action, step=step_name, purpose=purpose),), notes
            )
        timeout = self.policy_for(state).timeout_s
        state = replace(state, pending=message_id, wake_at=now + timedelta(seconds=timeout))
        command = SendCommand(
            message_id=message_id, action=action, step=step_name, purpose=purpose, attempt=attempt
        )
        return Transition(state, (command,), notes)

    def _entry(
        self,
        kind: HistoryKind,
        state: SagaState,
        *,
        attempt: int | None = None,
        outcome: str | None = None,
        reason: str | None = None,
        delay_s: float | None = None,
    ) -> HistoryEntry:
        """An entry about whatever the cursor points at (its step, purpose, attempt)."""
        step: str | None = None
        message_type: str | None = None
        handler: str | None = None
        if state.phase is Phase.EPILOGUE:
            action = self.definition.on_compensated[state.cursor]
            purpose = Purpose.EPILOGUE
            if isinstance(action, Local):
                handler = action.handler
            else:
                message_type = action.command
        else:
            step = state.steps[state.cursor].name
            purpose = Purpose.ACTION if state.phase is Phase.FORWARD else Purpose.COMPENSATION
        return HistoryEntry(
            kind=kind,
            step=step,
            purpose=purpose,
            attempt=state.attempt if attempt is None else attempt,
            message_type=message_type,
            handler=handler,
            outcome=outcome,
            reason=reason,
            delay_s=delay_s,
        )

    def _name_at(self, state: SagaState) -> str:
        if state.phase is Phase.EPILOGUE:
            action = self.definition.on_compensated[state.cursor]
            return action.handler if isinstance(action, Local) else action.command
        return state.steps[state.cursor].name
