"""Whether a started saga can finish under a changed definition (definition_compat)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from sagaway.orchestrator.definition_check import DefinitionFinding, DefinitionReport
from sagaway.orchestrator.definition_compat import realigned, unfinishable_reason
from sagaway.orchestrator.dsl import Action, Local, RetryPolicy, SagaDefinition, Step
from sagaway.orchestrator.state import Phase, SagaState, SagaStatus, StepState, StepStatus

pytestmark = pytest.mark.unit


def _step(name: str, *, command: str | None = None, undo: bool = True) -> Step:
    command = command or "".join(part.title() for part in name.split("_"))
    return Step(
        name=name,
        action=Action(participant="svc", command=command, payload=lambda d: {}),
        compensation=Action(participant="svc", command=f"Undo{command}", payload=lambda d: {})
        if undo
        else None,
    )


def _definition(*steps: Step, version: int = 1, epilogue: int = 1) -> SagaDefinition:
    tail = tuple(Local(handler=f"trip.after_{i}") for i in range(epilogue))
    return SagaDefinition(name="trip", steps=steps, on_compensated=tail, version=version)


V1 = _definition(_step("book_flight"), _step("book_hotel"), _step("charge_card", undo=False))


def _state(
    definition: SagaDefinition,
    *,
    cursor: int,
    phase: Phase = Phase.FORWARD,
    status: SagaStatus = SagaStatus.RUNNING,
) -> SagaState:
    """A saga at ``cursor``: the steps before it succeeded, the one at it running."""
    steps = []
    for i, s in enumerate(definition.steps):
        if i < cursor:
            steps.append(StepState(name=s.name, status=StepStatus.SUCCEEDED, attempts=1))
        elif i == cursor and phase is Phase.FORWARD:
            steps.append(StepState(name=s.name, status=StepStatus.RUNNING, attempts=1))
        else:
            steps.append(StepState(name=s.name))
    return SagaState(status=status, phase=phase, cursor=cursor, steps=tuple(steps), attempt=1)


def _why(
    now: SagaDefinition | None, state: SagaState, shape: tuple[str, ...] | None = V1.shape
) -> str | None:
    return unfinishable_reason(now, saga_type="trip", state=state, recorded_shape=shape)


def test_the_same_definition_fits() -> None:
    assert _why(V1, _state(V1, cursor=1)) is None


def test_a_step_added_after_the_cursor_fits_and_the_saga_takes_it_on() -> None:
    v2 = _definition(*V1.steps, _step("send_receipt", undo=False), version=2)
    state = _state(V1, cursor=1)

    assert v2.fingerprint != V1.fingerprint
    assert _why(v2, state) is None
    moved = realigned(state, v2)
    assert [s.name for s in moved.steps] == [
        "book_flight",
        "book_hotel",
        "charge_card",
        "send_receipt",
    ]
    assert moved.steps[:2] == state.steps[:2]
    assert moved.steps[3] == StepState(name="send_receipt")


def test_a_step_changed_after_the_cursor_fits() -> None:
    v2 = _definition(
        V1.steps[0], V1.steps[1], _step("charge_card", command="ChargeCardV2", undo=False)
    )

    assert _why(v2, _state(V1, cursor=1)) is None


def test_a_removed_step_the_saga_already_ran_does_not_fit() -> None:
    v2 = _definition(V1.steps[1], V1.steps[2], version=2)

    assert _why(v2, _state(V1, cursor=1)) == "step book_flight, which it already ran, was removed"


def test_a_removed_step_the_saga_is_at_does_not_fit() -> None:
    v2 = _definition(V1.steps[0], V1.steps[2], version=2)

    assert _why(v2, _state(V1, cursor=1)) == "step book_hotel, which it is at, was removed"


def test_reordered_steps_do_not_fit() -> None:
    v2 = _definition(V1.steps[1], V1.steps[0], V1.steps[2], version=2)

    assert _why(v2, _state(V1, cursor=1)) == (
        "step book_flight, which it already ran, moved from position 1 to 2"
    )


def test_a_step_inserted_before_the_cursor_does_not_fit() -> None:
    v2 = _definition(V1.steps[0], _step("check_visa"), V1.steps[1], V1.steps[2], version=2)

    assert _why(v2, _state(V1, cursor=1)) == (
        "step book_hotel, which it is at, moved from position 2 to 3"
    )


def test_a_changed_compensation_of_a_step_it_ran_does_not_fit() -> None:
    v2 = _definition(_step("book_flight", command="BookFlightV2"), V1.steps[1], V1.steps[2])

    why = _why(v2, _state(V1, cursor=1))

    assert why is not None and why.startswith("step book_flight, which it already ran, changed:")


def test_reordering_ahead_of_the_cursor_fits() -> None:
    v1 = _definition(_step("a"), _step("b"), _step("c"), _step("d", undo=False))
    v2 = _definition(_step("a"), _step("b"), _step("d", undo=False), _step("c"))

    assert _why(v2, _state(v1, cursor=1), v1.shape) is None


def test_a_saga_type_that_no_longer_exists_does_not_fit() -> None:
    assert _why(None, _state(V1, cursor=0)) == "saga type trip no longer exists"


def test_a_change_of_retry_policy_only_is_no_change() -> None:
    tuned = replace(V1.steps[1], retry=RetryPolicy(max_attempts=9, timeout_s=60))
    v2 = _definition(V1.steps[0], tuned, V1.steps[2], version=2)

    assert v2.fingerprint == V1.fingerprint and v2.shape == V1.shape
    assert _why(v2, _state(V1, cursor=1)) is None


def test_a_compensating_saga_needs_every_step_it_ran() -> None:
    state = _state(V1, cursor=1, phase=Phase.COMPENSATE, status=SagaStatus.COMPENSATING)
    state = state.with_step(2, status=StepStatus.FAILED)
    v2 = _definition(V1.steps[0], V1.steps[1], _step("charge_card_v2", undo=False), version=2)

    assert _why(v2, state) == "step charge_card, which it already ran, was removed"


def test_a_failed_saga_is_judged_like_a_running_one() -> None:
    failed = _state(V1, cursor=1, status=SagaStatus.FAILED)
    v2 = _definition(V1.steps[1], V1.steps[2], version=2)

    assert _why(v2, failed) is not None


def test_in_the_epilogue_only_the_epilogue_ran_so_far_matters() -> None:
    state = replace(
        _state(V1, cursor=0, phase=Phase.EPILOGUE, status=SagaStatus.COMPENSATING), cursor=0
    )
    steps_gone = _definition(_step("book_train"), epilogue=2, version=2)
    shorter = _definition(*V1.steps, epilogue=0, version=2)

    assert _why(steps_gone, state) is None
    assert realigned(state, steps_gone) == state
    assert _why(shorter, state) == "it is at epilogue action 1, the definition now has 0"


def test_a_saga_recorded_before_shapes_is_compared_by_step_names() -> None:
    state = _state(V1, cursor=1)
    changed_command = _definition(_step("book_flight", command="Other"), *V1.steps[1:])
    removed = _definition(*V1.steps[1:])

    assert _why(changed_command, state, shape=None) is None
    assert _why(removed, state, shape=None) == "step book_flight, which it already ran, was removed"


def test_the_shape_names_actions_compensations_pivot_and_epilogue() -> None:
    pivoted = _definition(
        _step("book_flight"), replace(_step("charge_card", undo=False), pivot=True)
    )

    assert pivoted.shape == (
        "book_flight=svc.BookFlight/svc.UndoBookFlight",
        "charge_card=svc.ChargeCard/-!",
        "~@trip.after_0",
    )
    assert len(pivoted.fingerprint) == 16


def test_the_report_reads_as_a_log_line() -> None:
    finding = DefinitionFinding(
        saga_id=uuid.UUID(int=1),
        saga_type="trip",
        status="FAILED",
        recorded_version=1,
        current_version=None,
        reason="saga type trip no longer exists",
    )

    assert str(DefinitionReport(changed=0, findings=())) == (
        "saga definitions: every unfinished saga runs under its current definition"
    )
    assert str(DefinitionReport(changed=3, findings=(finding,))).splitlines() == [
        "saga definitions: 3 unfinished saga(s) started under another definition;"
        " 2 can finish under the current one, 1 cannot",
        f"  saga {uuid.UUID(int=1)} (trip, FAILED, started under v1, current gone):"
        " saga type trip no longer exists",
    ]
