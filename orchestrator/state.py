"""The saga's state as the state machine sees it: plain frozen values."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class SagaStatus(StrEnum):
    """Where a saga is; the last three are terminal (FAILED until an operator acts)."""

    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

    @property
    def is_active(self) -> bool:
        """True while the saga moves without an operator."""
        return self in (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


class StepStatus(StrEnum):
    """Where one step is."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"


class Phase(StrEnum):
    """Which list of actions the cursor walks."""

    FORWARD = "forward"  # cursor: index of the step running
    COMPENSATE = "compensate"  # cursor: index of the step being compensated
    EPILOGUE = "epilogue"  # cursor: index into on_compensated
    DONE = "done"


class Outcome(StrEnum):
    """What a participant says of a command."""

    SUCCEEDED = "succeeded"
    REJECTED = "rejected"  # a business decision: retrying cannot change it
    FAILED = "failed"  # a technical error: retrying may help


@dataclass(frozen=True, slots=True)
class StepState:
    """One step's progress, as ``GET /sagas/{id}`` shows it."""

    name: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    compensation_attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SagaState:
    """Everything the state machine needs to decide the next move.

    Attributes:
        attempt: attempt number of the action in flight within its current budget
            (an operator's retry starts a fresh budget at 1).
        pending: ``message_id`` of the command whose reply is awaited; a reply caused
            by any other message is stale.
        wake_at: when the saga must be looked at again without a reply: the in-flight
            attempt's deadline, or the end of a retry backoff.
        rejection_reason: the business reason the saga is compensating for.
    """

    status: SagaStatus
    phase: Phase
    cursor: int
    steps: tuple[StepState, ...]
    attempt: int = 0
    pending: uuid.UUID | None = None
    wake_at: datetime | None = None
    failure_reason: str | None = None
    rejection_reason: str | None = None

    def with_step(self, index: int, **changes: object) -> SagaState:
        """A copy with step ``index`` changed."""
        steps = list(self.steps)
        steps[index] = replace(steps[index], **changes)  # type: ignore[arg-type]
        return replace(self, steps=tuple(steps))

    @property
    def current_step(self) -> str | None:
        """Name of the step the saga is at, for operators."""
        if self.phase in (Phase.FORWARD, Phase.COMPENSATE) and 0 <= self.cursor < len(self.steps):
            return self.steps[self.cursor].name
        return None
