"""Whether a started saga can finish under its type's current definition.

A saga records the shape of the definition it started under (``SagaDefinition.shape``)
and its steps' progress. When the definition changes, what the saga already did, and
what it is doing now, must still mean the same thing: the steps up to its cursor must
be the same steps at the same places. What lies ahead of the cursor (steps added,
changed or removed there) and retry policies (not part of the shape) may change
freely: the saga simply runs the current definition from its cursor on.

Pure functions over values: the coordinator asks before it drives a saga, the start-up
check (``definition_check``) asks for every unfinished saga.
"""

from __future__ import annotations

from dataclasses import replace

from sagaway.orchestrator.dsl import SagaDefinition, step_name_of
from sagaway.orchestrator.state import Phase, SagaState, StepState, StepStatus


def unfinishable_reason(
    definition: SagaDefinition | None,
    *,
    saga_type: str,
    state: SagaState,
    recorded_shape: tuple[str, ...] | None,
) -> str | None:
    """Why a saga cannot go on under ``definition`` (None when it can).

    Args:
        definition: the current definition of the saga's type, None if there is none.
        saga_type: the saga's type, for the message.
        state: the saga's state as stored.
        recorded_shape: the shape it started under; None for a saga recorded before
            shapes were (then only its step names are compared).
    """
    if definition is None:
        return f"saga type {saga_type} no longer exists"
    if recorded_shape is not None and recorded_shape == definition.shape:
        return None
    if state.phase is Phase.EPILOGUE:
        return _epilogue_reason(definition, state, recorded_shape)
    current = [s.name for s in definition.steps]
    recorded_lines = _step_lines(recorded_shape)
    for i in range(_reached(state)):
        name = state.steps[i].name
        if name not in current:
            return f"step {name}, which it {_did(state, i)}, was removed"
        if i >= len(current) or current[i] != name:
            return (
                f"step {name}, which it {_did(state, i)}, moved from position {i + 1}"
                f" to {current.index(name) + 1}"
            )
        if recorded_lines is not None and i < len(recorded_lines):
            now = definition.shape[i]
            if recorded_lines[i] != now:
                return (
                    f"step {name}, which it {_did(state, i)}, changed: {recorded_lines[i]} -> {now}"
                )
    return None


def realigned(state: SagaState, definition: SagaDefinition) -> SagaState:
    """The state with its steps after the cursor taken from ``definition``.

    Only for a saga ``unfinishable_reason`` accepts: the steps it reached are kept as
    they are, the ones ahead are the current definition's, not started yet.
    """
    if state.phase is Phase.EPILOGUE:
        # The epilogue never reads the steps again: they stay as the saga ran them.
        return state
    reached = _reached(state)
    ahead = tuple(StepState(name=s.name) for s in definition.steps[reached:])
    return replace(state, steps=state.steps[:reached] + ahead)


def _reached(state: SagaState) -> int:
    """How many leading steps the saga has run or is at (the rest are untouched)."""
    touched = [i for i, s in enumerate(state.steps) if s.status is not StepStatus.PENDING]
    last = max(touched, default=-1)
    if state.phase in (Phase.FORWARD, Phase.COMPENSATE):
        last = max(last, min(state.cursor, len(state.steps) - 1))
    return last + 1


def _did(state: SagaState, index: int) -> str:
    at_cursor = index == state.cursor and state.phase in (Phase.FORWARD, Phase.COMPENSATE)
    return "is at" if at_cursor else "already ran"


def _step_lines(shape: tuple[str, ...] | None) -> list[str] | None:
    if shape is None:
        return None
    return [line for line in shape if step_name_of(line) is not None]


def _epilogue_reason(
    definition: SagaDefinition, state: SagaState, recorded_shape: tuple[str, ...] | None
) -> str | None:
    # Compensation is over; only the epilogue actions it ran or is at must be the same.
    current = [line for line in definition.shape if step_name_of(line) is None]
    if state.cursor >= len(current):
        return f"it is at epilogue action {state.cursor + 1}, the definition now has {len(current)}"
    if recorded_shape is None:
        return None
    recorded = [line for line in recorded_shape if step_name_of(line) is None]
    for i in range(state.cursor + 1):
        if i >= len(recorded) or recorded[i] != current[i]:
            was = recorded[i] if i < len(recorded) else "nothing"
            return f"epilogue action {i + 1}, which it ran or is at, changed: {was} -> {current[i]}"
    return None
