"""A small typed DSL for saga definitions, validated when a definition is built.

A definition is data: the coordinator reads it, the state machine walks it, and nothing in
it performs I/O. Payload builders are pure functions of the saga's data.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

PayloadBuilder = Callable[[Mapping[str, Any]], dict[str, Any]]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DefinitionError(ValueError):
    """A saga definition is inconsistent; raised when the module defining it loads."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How a step's technical failures are retried. ``None`` takes the setting.

    Attributes:
        max_attempts: attempts before the saga is FAILED (``SAGAWAY_STEP_MAX_ATTEMPTS``).
        initial_interval_s: first retry delay, doubled each retry (``SAGAWAY_STEP_BACKOFF_S``).
        max_interval_s: cap of the delay (30 s).
        timeout_s: how long one attempt waits for its reply (``SAGAWAY_STEP_TIMEOUT_S``).
    """

    max_attempts: int | None = None
    initial_interval_s: float | None = None
    max_interval_s: float | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise DefinitionError("max_attempts must be at least 1")
        for name in ("initial_interval_s", "max_interval_s", "timeout_s"):
            value = getattr(self, name)
            if value is not None and not (0 < value < math.inf):
                raise DefinitionError(f"{name} must be positive and finite")

    def resolve(self, defaults: RetryPolicy) -> ResolvedRetryPolicy:
        """Fill the unset fields from ``defaults`` (which must set them all)."""
        merged = {
            name: getattr(self, name)
            if getattr(self, name) is not None
            else getattr(defaults, name)
            for name in ("max_attempts", "initial_interval_s", "max_interval_s", "timeout_s")
        }
        if any(v is None for v in merged.values()):
            raise DefinitionError("default retry policy must set every field")
        return ResolvedRetryPolicy(**merged)


@dataclass(frozen=True, kw_only=True, slots=True)
class ResolvedRetryPolicy:
    """A retry policy with every field known."""

    max_attempts: int
    initial_interval_s: float
    max_interval_s: float
    timeout_s: float

    def backoff_s(self, failed_attempt: int) -> float:
        """Delay before the attempt after ``failed_attempt`` (1-based), doubling, capped."""
        return float(min(self.initial_interval_s * 2 ** (failed_attempt - 1), self.max_interval_s))


@dataclass(frozen=True, kw_only=True, slots=True)
class Action:
    """A command sent to a participant, answered by a reply.

    Attributes:
        participant: the service that handles it (its queue's routing key).
        command: the message type, an imperative (``ReserveInventory``).
        payload: builds the command's payload from the saga's data.
    """

    participant: str
    command: str
    payload: PayloadBuilder

    def __post_init__(self) -> None:
        if not _NAME.match(self.participant):
            raise DefinitionError(f"participant {self.participant!r} is not a valid name")
        if not re.match(r"^[A-Z][A-Za-z0-9]{0,127}$", self.command):
            raise DefinitionError(f"command {self.command!r} must be a CamelCase message type")


@dataclass(frozen=True, kw_only=True, slots=True)
class Local:
    """Work done by the orchestrator itself, in the same transaction as the saga's
    state change (like Eventuate's local steps). ``handler`` names a registered
    function; it succeeds or rejects, it never waits for a reply."""

    handler: str

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z0-9_.]{0,127}$", self.handler):
            raise DefinitionError(f"local handler {self.handler!r} is not a valid name")


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """One step of a saga.

    Attributes:
        name: shown to operators (``reserve_inventory``).
        action: what the step does.
        compensation: what undoes it, or None when there is nothing to undo.
        retry: how technical failures of the action and its compensation are retried.
        pivot: once this step succeeded the saga never compensates again.
    """

    name: str
    action: Action | Local
    compensation: Action | Local | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    pivot: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise DefinitionError(f"step name {self.name!r} must be snake_case")


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaDefinition:
    """A named sequence of steps, plus what runs after a full compensation.

    Attributes:
        name: the saga type (``order_fulfillment``).
        steps: run in order; compensated in reverse.
        on_compensated: run in order after every completed step was compensated
            (mark the order rejected, tell the customer), retried like the last step
            before the failure.
        version: the definition's version as its authors number it; recorded on each
            saga it starts, for operators (the fingerprint is what is compared).
        shape: computed; one line per step (name, action, compensation, pivot mark),
            then one per epilogue action: what a started saga relies on. Payload
            builders and retry policies are not part of it.
        fingerprint: computed; a digest of ``shape``, recorded on each saga it starts.
    """

    name: str
    steps: tuple[Step, ...]
    on_compensated: tuple[Action | Local, ...] = ()
    version: int = 1
    shape: tuple[str, ...] = field(init=False, repr=False, compare=False)
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise DefinitionError(f"saga name {self.name!r} must be snake_case")
        if self.version < 1:
            raise DefinitionError(f"saga {self.name}: version must be at least 1")
        if not self.steps:
            raise DefinitionError(f"saga {self.name} has no steps")
        names = [s.name for s in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DefinitionError(f"saga {self.name} repeats step names {duplicates}")
        pivots = [i for i, s in enumerate(self.steps) if s.pivot]
        if len(pivots) > 1:
            raise DefinitionError(f"saga {self.name} has more than one pivot")
        if pivots:
            after = [s.name for s in self.steps[pivots[0] :] if s.compensation is not None]
            if after:
                raise DefinitionError(
                    f"saga {self.name}: steps at or after the pivot cannot be compensated: {after}"
                )
        shape = definition_shape(self.steps, self.on_compensated)
        # Frozen: the computed fields are set once, here.
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "fingerprint", shape_fingerprint(shape))

    def actions(self) -> Iterator[tuple[str, Action | Local]]:
        """Every action of the saga with where it stands (``step reserve (compensation)``,
        ``on_compensated[0]``): steps in order, then what runs after a compensation."""
        for step in self.steps:
            yield f"step {step.name}", step.action
            if step.compensation is not None:
                yield f"step {step.name} (compensation)", step.compensation
        for index, action in enumerate(self.on_compensated):
            yield f"on_compensated[{index}]", action

    @property
    def pivot_index(self) -> int | None:
        """Index of the pivot step, if any."""
        return next((i for i, s in enumerate(self.steps) if s.pivot), None)

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


def definition_shape(
    steps: tuple[Step, ...], on_compensated: tuple[Action | Local, ...]
) -> tuple[str, ...]:
    """The lines of a definition's shape (see ``SagaDefinition.shape``).

    A step reads ``name=action/compensation`` (``!`` marks the pivot), an epilogue
    action ``~action``; an action is ``participant.Command`` or ``@local.handler``.
    """
    lines = []
    for step in steps:
        undo = _action_shape(step.compensation) if step.compensation is not None else "-"
        lines.append(f"{step.name}={_action_shape(step.action)}/{undo}{'!' if step.pivot else ''}")
    lines += [f"~{_action_shape(a)}" for a in on_compensated]
    return tuple(lines)


def shape_fingerprint(shape: tuple[str, ...]) -> str:
    """A short stable digest of a shape (16 hex digits)."""
    return hashlib.sha256("\n".join(shape).encode()).hexdigest()[:16]


def step_name_of(line: str) -> str | None:
    """The step name of a shape line, or None for an epilogue line."""
    return None if line.startswith("~") else line.split("=", 1)[0]


def _action_shape(action: Action | Local) -> str:
    if isinstance(action, Local):
        return f"@{action.handler}"
    return f"{action.participant}.{action.command}"
