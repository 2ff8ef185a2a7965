"""The pure saga state machine, walked through the order saga event by event."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from sagaway.orchestrator.dsl import Local, RetryPolicy
from sagaway.orchestrator.history import HistoryEntry, HistoryKind
from sagaway.orchestrator.state import Outcome, Phase, SagaState, SagaStatus, StepState, StepStatus
from sagaway.orchestrator.state_machine import (
    AbortRequested,
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
from sagaway.services.orders.saga import ORDER_FULFILLMENT

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEFAULTS = RetryPolicy(max_attempts=3, initial_interval_s=1, max_interval_s=30, timeout_s=10)

RESERVE, AUTHORIZE, APPROVE, NOTIFY = (
    "reserve_inventory",
    "authorize_payment",
    "approve_order",
    "notify_customer",
)


@pytest.fixture
def machine() -> SagaMachine:
    return SagaMachine(ORDER_FULFILLMENT, DEFAULTS)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# ---------------------------------------------------------------- helpers


def command_of(t: Transition) -> SendCommand:
    """The one command ``t`` sends; fails when it does anything else."""
    assert len(t.effects) == 1, t.effects
    effect = t.effects[0]
    assert isinstance(effect, SendCommand), effect
    return effect


def local_of(t: Transition) -> RunLocal:
    """The one local action ``t`` runs; fails when it does anything else."""
    assert len(t.effects) == 1, t.effects
    effect = t.effects[0]
    assert isinstance(effect, RunLocal), effect
    return effect


def reply(
    machine: SagaMachine,
    state: SagaState,
    outcome: Outcome = Outcome.SUCCEEDED,
    reason: str | None = None,
    *,
    now: datetime = NOW,
    causation_id: uuid.UUID | None = None,
) -> Transition:
    """Answer the pending command (or ``causation_id``) with ``outcome``."""
    if causation_id is None:
        assert state.pending is not None, "no command is pending"
        causation_id = state.pending
    return machine.apply(
        state,
        ReplyReceived(
            now=now,
            next_message_id=uuid.uuid4(),
            causation_id=causation_id,
            outcome=outcome,
            reason=reason,
        ),
    )


def local_done(
    machine: SagaMachine,
    state: SagaState,
    outcome: Outcome = Outcome.SUCCEEDED,
    reason: str | None = None,
    *,
    now: datetime = NOW,
) -> Transition:
    return machine.apply(
        state,
        LocalCompleted(now=now, next_message_id=uuid.uuid4(), outcome=outcome, reason=reason),
    )


def succeed(machine: SagaMachine, t: Transition, *, now: datetime = NOW) -> Transition:
    """Let whatever ``t`` asked for succeed: reply to its command or complete its local."""
    if isinstance(t.effects[0], RunLocal):
        local_of(t)
        return local_done(machine, t.state, now=now)
    command_of(t)
    return reply(machine, t.state, now=now)


def wake(machine: SagaMachine, state: SagaState, now: datetime) -> Transition:
    return machine.apply(state, WokeUp(now=now, next_message_id=uuid.uuid4()))


def retry(machine: SagaMachine, state: SagaState, message_id: uuid.UUID) -> Transition:
    return machine.apply(state, RetryRequested(now=NOW, next_message_id=message_id))


def abort(machine: SagaMachine, state: SagaState) -> Transition:
    return machine.apply(state, AbortRequested(now=NOW, next_message_id=uuid.uuid4()))


def start(machine: SagaMachine) -> Transition:
    return machine.start(now=NOW, next_message_id=uuid.uuid4())


def run_until(machine: SagaMachine, step: str) -> Transition:
    """Start a saga and let every step before ``step`` succeed; ``step`` is in flight."""
    t = start(machine)
    while t.state.current_step != step:
        t = succeed(machine, t)
    return t


def exhaust(machine: SagaMachine, t: Transition) -> Transition:
    """Fail the command of ``t`` technically until the attempts run out."""
    clock = 0.0
    for _ in range(DEFAULTS.max_attempts or 0):
        t = reply(machine, t.state, Outcome.FAILED, "unavailable", now=at(clock))
        if t.state.status is SagaStatus.FAILED:
            return t
        assert t.state.wake_at is not None
        clock = (t.state.wake_at - NOW).total_seconds()
        t = wake(machine, t.state, t.state.wake_at)
    raise AssertionError("attempts never ran out")


def step(state: SagaState, name: str) -> StepState:
    return next(s for s in state.steps if s.name == name)


def statuses(state: SagaState) -> dict[str, StepStatus]:
    return {s.name: s.status for s in state.steps}


# ---------------------------------------------------------------- the happy path


def test_start_sends_reserve_inventory_with_a_deadline(machine: SagaMachine) -> None:
    message_id = uuid.uuid4()

    t = machine.start(now=NOW, next_message_id=message_id)

    command = command_of(t)
    assert command.message_id == message_id
    assert command.action.command == "ReserveInventory"
    assert command.action.participant == "inventory"
    assert (command.step, command.purpose, command.attempt) == (RESERVE, "action", 1)
    assert t.state.status is SagaStatus.RUNNING
    assert t.state.pending == message_id
    assert t.state.wake_at == at(10)
    assert t.state.current_step == RESERVE
    assert step(t.state, RESERVE) == StepState(
        name=RESERVE, status=StepStatus.RUNNING, attempts=1, started_at=NOW
    )
    assert [s.status for s in t.state.steps[1:]] == [StepStatus.PENDING] * 3


def test_happy_path_completes_with_every_step_succeeded_once(machine: SagaMachine) -> None:
    t = start(machine)

    t = reply(machine, t.state, now=at(1))
    assert command_of(t).action.command == "AuthorizePayment"
    assert t.state.current_step == AUTHORIZE
    assert step(t.state, RESERVE).finished_at == at(1)

    t = reply(machine, t.state, now=at(2))
    approve = local_of(t)
    assert approve.local == Local(handler="orders.approve")
    assert (approve.step, approve.purpose) == (APPROVE, "action")
    assert t.state.current_step == APPROVE
    # A local step waits for no reply, so it has no pending message and no deadline.
    assert (t.state.pending, t.state.wake_at) == (None, None)

    t = local_done(machine, t.state, now=at(3))
    notify = command_of(t)
    assert (notify.action.command, notify.step) == ("NotifyCustomer", NOTIFY)
    assert t.state.current_step == NOTIFY

    t = reply(machine, t.state, now=at(4))
    assert t.effects == ()
    assert t.state.status is SagaStatus.COMPLETED
    assert t.state.phase is Phase.DONE
    assert t.state.current_step is None
    assert t.state.failure_reason is None
    assert (t.state.pending, t.state.wake_at) == (None, None)
    assert all(s.status is StepStatus.SUCCEEDED for s in t.state.steps)
    assert [s.attempts for s in t.state.steps] == [1, 1, 1, 1]
    assert [s.finished_at for s in t.state.steps] == [at(1), at(2), at(3), at(4)]
    assert all(s.error is None for s in t.state.steps)
    assert HistoryEntry(kind=HistoryKind.SAGA_ENDED, outcome="COMPLETED") in t.notes
    assert "saga COMPLETED" in [n.detail for n in t.notes]


def test_every_command_carries_the_next_message_id_it_was_given(machine: SagaMachine) -> None:
    t = start(machine)
    next_id = uuid.uuid4()

    t = machine.apply(
        t.state,
        ReplyReceived(
            now=NOW,
            next_message_id=next_id,
            causation_id=t.state.pending,
            outcome=Outcome.SUCCEEDED,
        ),
    )

    assert command_of(t).message_id == next_id
    assert t.state.pending == next_id


# ---------------------------------------------------------------- business rejections


def test_out_of_stock_at_the_first_step_rejects_without_compensating(
    machine: SagaMachine,
) -> None:
    t = start(machine)

    t = reply(machine, t.state, Outcome.REJECTED, "out_of_stock", now=at(1))

    reject = local_of(t)
    assert reject.local == Local(handler="orders.reject")
    assert (reject.step, reject.purpose) == (None, "epilogue")
    assert t.state.status is SagaStatus.COMPENSATING
    assert t.state.phase is Phase.EPILOGUE
    assert t.state.rejection_reason == "out_of_stock"
    failed = step(t.state, RESERVE)
    assert (failed.status, failed.error, failed.finished_at) == (
        StepStatus.FAILED,
        "out_of_stock",
        at(1),
    )

    t = local_done(machine, t.state)
    notice = command_of(t)
    assert (notice.action.command, notice.purpose, notice.step) == (
        "NotifyCustomer",
        "epilogue",
        None,
    )
    data = {"order_id": str(uuid.uuid4()), "customer_id": "c-1", "rejection_reason": "x"}
    assert notice.action.payload(data)["template"] == "order_rejected"

    t = reply(machine, t.state)
    assert t.effects == ()
    assert t.state.status is SagaStatus.COMPENSATED
    assert t.state.failure_reason is not None
    assert "out_of_stock" in t.state.failure_reason
    assert statuses(t.state) == {
        RESERVE: StepStatus.FAILED,
        AUTHORIZE: StepStatus.PENDING,
        APPROVE: StepStatus.PENDING,
        NOTIFY: StepStatus.PENDING,
    }


def test_insufficient_funds_releases_the_reservation_then_rejects(machine: SagaMachine) -> None:
    t = run_until(machine, AUTHORIZE)

    t = reply(machine, t.state, Outcome.REJECTED, "insufficient_funds", now=at(2))

    release = command_of(t)
    assert (release.action.command, release.action.participant) == (
        "ReleaseInventory",
        "inventory",
    )
    assert (release.step, release.purpose, release.attempt) == (RESERVE, "compensation", 1)
    assert t.state.status is SagaStatus.COMPENSATING
    assert t.state.current_step == RESERVE
    assert t.state.pending == release.message_id
    assert step(t.state, RESERVE).status is StepStatus.COMPENSATING
    assert step(t.state, RESERVE).compensation_attempts == 1
    assert step(t.state, AUTHORIZE).status is StepStatus.FAILED
    assert step(t.state, AUTHORIZE).error == "insufficient_funds"

    t = reply(machine, t.state, now=at(3))
    assert local_of(t).local == Local(handler="orders.reject")
    assert step(t.state, RESERVE).status is StepStatus.COMPENSATED
    assert step(t.state, RESERVE).finished_at == at(3)

    t = succeed(machine, t)
    assert command_of(t).action.command == "NotifyCustomer"
    t = succeed(machine, t)

    assert t.state.status is SagaStatus.COMPENSATED
    assert t.state.failure_reason is not None
    assert "insufficient_funds" in t.state.failure_reason
    assert statuses(t.state) == {
        RESERVE: StepStatus.COMPENSATED,
        AUTHORIZE: StepStatus.FAILED,
        APPROVE: StepStatus.PENDING,
        NOTIFY: StepStatus.PENDING,
    }


def test_a_rejected_approval_voids_then_releases_newest_first(machine: SagaMachine) -> None:
    t = run_until(machine, APPROVE)

    t = local_done(machine, t.state, Outcome.REJECTED, "order_cancelled")
    assert command_of(t).action.command == "VoidPayment"
    t = reply(machine, t.state)
    assert command_of(t).action.command == "ReleaseInventory"
    t = reply(machine, t.state)
    assert local_of(t).local.handler == "orders.reject"
    t = succeed(machine, succeed(machine, t))

    assert t.state.status is SagaStatus.COMPENSATED
    assert statuses(t.state)[AUTHORIZE] is StepStatus.COMPENSATED
    assert statuses(t.state)[RESERVE] is StepStatus.COMPENSATED
    assert statuses(t.state)[APPROVE] is StepStatus.FAILED


def test_a_business_rejection_after_the_pivot_fails_without_compensating(
    machine: SagaMachine,
) -> None:
    t = run_until(machine, NOTIFY)

    t = reply(machine, t.state, Outcome.REJECTED, "no_such_customer", now=at(5))

    assert t.effects == ()
    assert t.state.status is SagaStatus.FAILED
    assert t.state.phase is Phase.FORWARD
    assert t.state.failure_reason is not None
    assert "notify_customer" in t.state.failure_reason
    assert "no_such_customer" in t.state.failure_reason
    assert statuses(t.state) == {
        RESERVE: StepStatus.SUCCEEDED,
        AUTHORIZE: StepStatus.SUCCEEDED,
        APPROVE: StepStatus.SUCCEEDED,
        NOTIFY: StepStatus.FAILED,
    }
    assert (t.state.pending, t.state.wake_at) == (None, None)


# ---------------------------------------------------------------- stale and duplicate replies


def test_a_reply_to_another_message_is_ignored(machine: SagaMachine) -> None:
    t = start(machine)

    ignored = reply(machine, t.state, Outcome.REJECTED, "out_of_stock", causation_id=uuid.uuid4())

    assert ignored.ignored is True
    assert ignored.effects == ()
    assert ignored.state == t.state


def test_a_reply_without_causation_is_ignored(machine: SagaMachine) -> None:
    t = start(machine)

    ignored = machine.apply(
        t.state,
        ReplyReceived(
            now=NOW, next_message_id=uuid.uuid4(), causation_id=None, outcome=Outcome.SUCCEEDED
        ),
    )

    assert ignored.ignored is True
    assert ignored.state == t.state


def test_a_duplicate_reply_after_the_saga_moved_on_is_ignored(machine: SagaMachine) -> None:
    t = start(machine)
    reserve_id = t.state.pending
    t = reply(machine, t.state)
    assert t.state.current_step == AUTHORIZE

    duplicate = reply(machine, t.state, causation_id=reserve_id)

    assert duplicate.ignored is True
    assert duplicate.effects == ()
    assert duplicate.state == t.state


def test_a_reply_after_the_saga_completed_is_ignored(machine: SagaMachine) -> None:
    t = run_until(machine, NOTIFY)
    notify_id = t.state.pending
    t = reply(machine, t.state)
    assert t.state.status is SagaStatus.COMPLETED

    late = reply(machine, t.state, Outcome.FAILED, "boom", causation_id=notify_id)

    assert late.ignored is True
    assert late.state == t.state


# ---------------------------------------------------------------- technical failures


def test_a_technical_failure_backs_off_then_retries_with_a_new_message(
    machine: SagaMachine,
) -> None:
    t = start(machine)
    first_id = command_of(t).message_id

    t = reply(machine, t.state, Outcome.FAILED, "inventory unavailable", now=at(2))

    assert t.effects == ()
    assert t.state.status is SagaStatus.RUNNING
    assert t.state.pending is None
    assert t.state.wake_at == at(3)  # first backoff: 1 s
    assert step(t.state, RESERVE).status is StepStatus.RUNNING
    assert step(t.state, RESERVE).error == "inventory unavailable"

    early = wake(machine, t.state, at(2.5))
    assert early.ignored is True
    assert early.effects == ()
    assert early.state == t.state

    t = wake(machine, t.state, at(3))
    second = command_of(t)
    assert second.message_id != first_id
    assert (second.action.command, second.attempt, second.purpose) == (
        "ReserveInventory",
        2,
        "action",
    )
    assert t.state.attempt == 2
    assert t.state.pending == second.message_id
    assert t.state.wake_at == at(13)  # the new attempt's deadline
    assert step(t.state, RESERVE).attempts == 2
    assert step(t.state, RESERVE).started_at == NOW

    t = reply(machine, t.state, Outcome.FAILED, "inventory unavailable", now=at(4))
    assert t.state.wake_at == at(6)  # second backoff: doubled to 2 s
    assert t.state.pending is None


def test_a_reply_to_the_failed_attempt_during_backoff_is_stale(machine: SagaMachine) -> None:
    t = start(machine)
    first_id = t.state.pending
    t = reply(machine, t.state, Outcome.FAILED, "unavailable")

    late = reply(machine, t.state, causation_id=first_id)

    assert late.ignored is True
    assert late.state == t.state


def test_running_out_of_attempts_fails_the_saga_naming_the_step(machine: SagaMachine) -> None:
    t = run_until(machine, AUTHORIZE)

    t = exhaust(machine, t)

    assert t.effects == ()
    assert t.state.status is SagaStatus.FAILED
    assert t.state.phase is Phase.FORWARD
    assert t.state.current_step == AUTHORIZE
    assert t.state.failure_reason is not None
    assert "authorize_payment" in t.state.failure_reason
    assert "3 attempts" in t.state.failure_reason
    assert "unavailable" in t.state.failure_reason
    failed = step(t.state, AUTHORIZE)
    assert (failed.status, failed.attempts, failed.error) == (
        StepStatus.FAILED,
        3,
        "unavailable",
    )
    assert failed.finished_at is not None
    assert step(t.state, RESERVE).status is StepStatus.SUCCEEDED
    assert (t.state.pending, t.state.wake_at) == (None, None)
    # Nothing is compensated until an operator decides.
    assert t.state.rejection_reason is None


def test_a_failed_saga_ignores_wake_ups(machine: SagaMachine) -> None:
    t = exhaust(machine, start(machine))

    woken = wake(machine, t.state, at(3600))

    assert woken.ignored is True
    assert woken.state == t.state


def test_a_local_step_that_fails_technically_is_run_again_after_the_backoff(
    machine: SagaMachine,
) -> None:
    t = run_until(machine, APPROVE)

    t = local_done(machine, t.state, Outcome.FAILED, "database hiccup", now=at(1))
    assert t.effects == ()
    assert t.state.wake_at == at(2)

    t = wake(machine, t.state, at(2))
    assert local_of(t).local.handler == "orders.approve"
    assert t.state.attempt == 2
    assert step(t.state, APPROVE).attempts == 2


# ---------------------------------------------------------------- deadlines


def test_no_reply_before_the_deadline_counts_as_a_technical_failure(
    machine: SagaMachine,
) -> None:
    t = start(machine)
    timed_out = t.state.pending
    assert t.state.wake_at == at(10)

    assert wake(machine, t.state, at(9.9)).ignored is True

    t = wake(machine, t.state, at(10))
    assert t.effects == ()
    assert t.state.status is SagaStatus.RUNNING
    assert t.state.pending is None
    assert t.state.wake_at == at(11)
    error = step(t.state, RESERVE).error
    assert error is not None
    assert "no reply within 10s" in error

    late = reply(machine, t.state, causation_id=timed_out, now=at(10.5))
    assert late.ignored is True
    assert late.state == t.state

    t = wake(machine, t.state, at(11))
    assert command_of(t).message_id != timed_out
    assert command_of(t).attempt == 2


def test_a_reply_to_the_timed_out_attempt_after_the_retry_is_stale(machine: SagaMachine) -> None:
    t = start(machine)
    timed_out = t.state.pending
    t = wake(machine, t.state, at(10))
    t = wake(machine, t.state, at(11))
    retried = t.state.pending

    late = reply(machine, t.state, causation_id=timed_out, now=at(12))

    assert late.ignored is True
    assert late.state.pending == retried
    assert late.state == t.state


def test_deadlines_alone_run_out_the_attempts(machine: SagaMachine) -> None:
    t = start(machine)
    while t.state.status is SagaStatus.RUNNING:
        assert t.state.wake_at is not None
        t = wake(machine, t.state, t.state.wake_at)

    assert t.state.status is SagaStatus.FAILED
    assert step(t.state, RESERVE).attempts == 3
    assert t.state.failure_reason is not None
    assert "no reply within 10s" in t.state.failure_reason


# ---------------------------------------------------------------- operator retry


def test_retry_resumes_a_failed_saga_at_the_failed_step(machine: SagaMachine) -> None:
    t = exhaust(machine, run_until(machine, AUTHORIZE))
    last_id = uuid.uuid4()
    assert t.state.status is SagaStatus.FAILED

    resumed = retry(machine, t.state, last_id)

    command = command_of(resumed)
    assert command.message_id == last_id
    assert (command.action.command, command.attempt, command.purpose) == (
        "AuthorizePayment",
        1,
        "action",
    )
    assert resumed.state.status is SagaStatus.RUNNING
    assert resumed.state.attempt == 1
    assert resumed.state.pending == last_id
    assert resumed.state.failure_reason is None
    authorize = step(resumed.state, AUTHORIZE)
    assert authorize.status is StepStatus.RUNNING
    assert authorize.error is None

    # The fresh budget lets it finish.
    t = reply(machine, resumed.state)
    t = succeed(machine, succeed(machine, t))
    assert t.state.status is SagaStatus.COMPLETED


def test_retry_gives_a_fresh_attempt_budget(machine: SagaMachine) -> None:
    t = exhaust(machine, start(machine))

    t = exhaust(machine, retry(machine, t.state, uuid.uuid4()))

    assert t.state.status is SagaStatus.FAILED
    assert step(t.state, RESERVE).attempts == 6


def test_a_reply_from_before_the_retry_is_stale(machine: SagaMachine) -> None:
    t = start(machine)
    before = t.state.pending
    t = exhaust(machine, t)
    resumed = retry(machine, t.state, uuid.uuid4())

    late = reply(machine, resumed.state, causation_id=before)

    assert late.ignored is True
    assert late.state == resumed.state


@pytest.mark.parametrize("target", ["running", "completed", "compensated"])
def test_retry_of_a_saga_that_did_not_fail_is_refused(machine: SagaMachine, target: str) -> None:
    t = start(machine)
    if target == "completed":
        while t.state.status is SagaStatus.RUNNING:
            t = succeed(machine, t)
    elif target == "compensated":
        t = reply(machine, t.state, Outcome.REJECTED, "out_of_stock")
        t = succeed(machine, succeed(machine, t))
    assert t.state.status is SagaStatus(target.upper())

    with pytest.raises(InvalidRequest, match="only a FAILED saga can be retried"):
        retry(machine, t.state, uuid.uuid4())


# ---------------------------------------------------------------- operator abort


def test_abort_before_the_pivot_compensates_the_failed_and_completed_steps(
    machine: SagaMachine,
) -> None:
    t = exhaust(machine, run_until(machine, AUTHORIZE))

    t = abort(machine, t.state)

    # The failed step first: its timed-out attempt may have taken effect late.
    void = command_of(t)
    assert (void.action.command, void.step, void.purpose) == (
        "VoidPayment",
        AUTHORIZE,
        "compensation",
    )
    assert t.state.status is SagaStatus.COMPENSATING
    assert t.state.rejection_reason == "aborted"
    assert step(t.state, AUTHORIZE).status is StepStatus.COMPENSATING

    t = reply(machine, t.state)
    release = command_of(t)
    assert (release.action.command, release.step) == ("ReleaseInventory", RESERVE)
    assert step(t.state, AUTHORIZE).status is StepStatus.COMPENSATED

    t = reply(machine, t.state)
    assert local_of(t).local.handler == "orders.reject"
    t = succeed(machine, t)
    notice = command_of(t)
    data = {"order_id": str(uuid.uuid4()), "customer_id": "c-1", "rejection_reason": "aborted"}
    assert notice.action.payload(data)["template"] == "order_rejected"
    t = reply(machine, t.state)

    assert t.state.status is SagaStatus.COMPENSATED
    assert t.state.failure_reason == "aborted"
    assert statuses(t.state) == {
        RESERVE: StepStatus.COMPENSATED,
        AUTHORIZE: StepStatus.COMPENSATED,
        APPROVE: StepStatus.PENDING,
        NOTIFY: StepStatus.PENDING,
    }


def test_abort_of_a_failed_first_step_releases_what_it_may_have_reserved(
    machine: SagaMachine,
) -> None:
    t = exhaust(machine, start(machine))

    t = abort(machine, t.state)

    assert command_of(t).action.command == "ReleaseInventory"
    t = reply(machine, t.state)
    assert local_of(t).local.handler == "orders.reject"
    assert step(t.state, RESERVE).status is StepStatus.COMPENSATED


def test_abort_after_the_pivot_is_refused(machine: SagaMachine) -> None:
    t = exhaust(machine, run_until(machine, NOTIFY))
    assert t.state.status is SagaStatus.FAILED
    assert step(t.state, APPROVE).status is StepStatus.SUCCEEDED

    with pytest.raises(InvalidRequest, match="pivot"):
        abort(machine, t.state)


def test_abort_of_a_saga_that_did_not_fail_is_refused(machine: SagaMachine) -> None:
    t = start(machine)

    with pytest.raises(InvalidRequest, match="only a FAILED saga can be aborted"):
        abort(machine, t.state)


def test_abort_of_a_saga_that_failed_while_compensating_is_refused(
    machine: SagaMachine,
) -> None:
    t = run_until(machine, AUTHORIZE)
    t = reply(machine, t.state, Outcome.REJECTED, "insufficient_funds")
    t = exhaust(machine, t)
    assert t.state.status is SagaStatus.FAILED

    with pytest.raises(InvalidRequest, match="already compensating"):
        abort(machine, t.state)


# ---------------------------------------------------------------- failing compensations


def test_a_failed_compensation_is_retried_then_fails_the_saga(machine: SagaMachine) -> None:
    t = run_until(machine, AUTHORIZE)
    t = reply(machine, t.state, Outcome.REJECTED, "insufficient_funds")
    first = command_of(t)
    assert first.action.command == "ReleaseInventory"

    t = reply(machine, t.state, Outcome.FAILED, "inventory unavailable", now=at(1))
    assert t.state.status is SagaStatus.COMPENSATING
    assert t.state.wake_at == at(2)
    t = wake(machine, t.state, at(2))
    second = command_of(t)
    assert second.message_id != first.message_id
    assert (second.action.command, second.purpose, second.attempt) == (
        "ReleaseInventory",
        "compensation",
        2,
    )
    assert step(t.state, RESERVE).compensation_attempts == 2

    t = reply(machine, t.state, Outcome.FAILED, "inventory unavailable", now=at(3))
    assert t.state.wake_at == at(5)
    t = wake(machine, t.state, at(5))
    t = reply(machine, t.state, Outcome.FAILED, "inventory unavailable", now=at(6))

    assert t.effects == ()
    assert t.state.status is SagaStatus.FAILED
    assert t.state.phase is Phase.COMPENSATE
    assert t.state.failure_reason is not None
    assert "reserve_inventory" in t.state.failure_reason
    assert "3 attempts" in t.state.failure_reason
    assert step(t.state, RESERVE).compensation_attempts == 3
    # The step's effect was never undone, so it must not claim it was.
    assert step(t.state, RESERVE).status is not StepStatus.COMPENSATED


def test_a_rejected_compensation_is_retried_not_accepted(machine: SagaMachine) -> None:
    t = run_until(machine, AUTHORIZE)
    t = reply(machine, t.state, Outcome.REJECTED, "insufficient_funds")

    t = reply(machine, t.state, Outcome.REJECTED, "nope", now=at(1))

    assert t.state.status is SagaStatus.COMPENSATING
    assert t.state.wake_at == at(2)
    assert step(t.state, RESERVE).status is StepStatus.COMPENSATING


def test_retry_of_a_failed_compensation_resumes_compensating(machine: SagaMachine) -> None:
    t = run_until(machine, AUTHORIZE)
    t = reply(machine, t.state, Outcome.REJECTED, "insufficient_funds")
    t = exhaust(machine, t)

    t = retry(machine, t.state, uuid.uuid4())

    command = command_of(t)
    assert (command.action.command, command.purpose, command.attempt) == (
        "ReleaseInventory",
        "compensation",
        1,
    )
    assert t.state.status is SagaStatus.COMPENSATING
    assert t.state.attempt == 1
    t = reply(machine, t.state)
    assert step(t.state, RESERVE).status is StepStatus.COMPENSATED
    t = succeed(machine, succeed(machine, t))
    assert t.state.status is SagaStatus.COMPENSATED
    assert t.state.rejection_reason == "insufficient_funds"


def test_retry_of_a_failed_epilogue_resumes_the_epilogue(machine: SagaMachine) -> None:
    t = reply(machine, start(machine).state, Outcome.REJECTED, "out_of_stock")
    t = succeed(machine, t)  # orders.reject
    t = exhaust(machine, t)  # the rejection notice cannot be sent
    assert t.state.status is SagaStatus.FAILED
    assert t.state.phase is Phase.EPILOGUE
    assert t.state.failure_reason is not None
    assert "NotifyCustomer (epilogue)" in t.state.failure_reason

    t = retry(machine, t.state, uuid.uuid4())

    command = command_of(t)
    assert (command.action.command, command.purpose, command.attempt) == (
        "NotifyCustomer",
        "epilogue",
        1,
    )
    assert t.state.status is SagaStatus.COMPENSATING
    t = reply(machine, t.state)
    assert t.state.status is SagaStatus.COMPENSATED


def _fail_then_retry_compensation(machine: SagaMachine) -> Transition:
    t = run_until(machine, AUTHORIZE)
    t = reply(machine, t.state, Outcome.REJECTED, "insufficient_funds")
    t = retry(machine, exhaust(machine, t).state, uuid.uuid4())
    t = reply(machine, t.state)  # ReleaseInventory
    return succeed(machine, succeed(machine, t))  # the epilogue


def _fail_then_retry_epilogue(machine: SagaMachine) -> Transition:
    t = run_until(machine, AUTHORIZE)
    t = reply(machine, t.state, Outcome.REJECTED, "insufficient_funds")
    t = succeed(machine, succeed(machine, t))  # ReleaseInventory, orders.reject
    t = retry(machine, exhaust(machine, t).state, uuid.uuid4())
    return reply(machine, t.state)  # NotifyCustomer


@pytest.mark.parametrize(
    "scenario", [_fail_then_retry_compensation, _fail_then_retry_epilogue], ids=["comp", "epi"]
)
def test_a_compensated_saga_still_names_its_reason_after_an_operator_retry(
    machine: SagaMachine, scenario: Callable[[SagaMachine], Transition]
) -> None:
    t = scenario(machine)
    assert t.state.status is SagaStatus.COMPENSATED

    # SPEC: failure_reason names why the saga did not complete (the reason code).
    assert t.state.failure_reason is not None
    assert "insufficient_funds" in t.state.failure_reason
