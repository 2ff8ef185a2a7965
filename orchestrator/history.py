"""A saga's history as data: typed entries, and the one place they become sentences.

The coordinator and the state machine record what happened as fields (which step, which
attempt, what came back and why); the API, the dashboard and the CLI render them.
Nothing parses a sentence back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class HistoryKind(StrEnum):
    """What a history entry records."""

    # Messages and actions.
    COMMAND_SENT = "command_sent"
    REPLY_RECEIVED = "reply_received"
    STALE_REPLY = "stale_reply"
    LOCAL_ACTION = "local_action"
    # An operator's request (``actor`` says who).
    ADMIN_RETRY = "admin_retry"
    ADMIN_ABORT = "admin_abort"
    # The state machine's moves.
    SAGA_STARTED = "saga_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_COMPENSATED = "step_compensated"
    STEP_REJECTED = "step_rejected"
    EPILOGUE_DONE = "epilogue_done"
    ATTEMPT_FAILED = "attempt_failed"
    RETRY_SCHEDULED = "retry_scheduled"
    RETRY_STARTED = "retry_started"
    SAGA_RESUMED = "saga_resumed"
    SAGA_ABORTED = "saga_aborted"
    SAGA_ENDED = "saga_ended"
    # The coordinator would not drive the saga: its definition changed under it.
    DEFINITION_REFUSED = "definition_refused"
    # A move recorded as prose only (history written before entries were typed).
    TRANSITION = "transition"


class Purpose(StrEnum):
    """What an action is for, as the state machine names it."""

    ACTION = "action"
    COMPENSATION = "compensation"
    EPILOGUE = "epilogue"


# An attempt's outcome: the reply protocol's three, plus a deadline that passed.
TIMEOUT = "timeout"

# The phase word the failure of a compensation or epilogue attempt is labelled with.
_PHASE_WORD = {Purpose.COMPENSATION: "compensate", Purpose.EPILOGUE: "epilogue"}


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    """One entry of a saga's history; which fields are set depends on ``kind``.

    Attributes:
        kind: what happened.
        step: the step it concerns (None for the epilogue and saga-wide moves).
        attempt: the attempt number within its budget.
        purpose: action, compensation or epilogue.
        outcome: ``succeeded``/``rejected``/``failed``/``timeout`` for an attempt; the
            final status (``COMPLETED``...) for ``saga_ended``.
        reason: the rejection reason or the error.
        message_type: the command sent or the reply received.
        participant: where a command went.
        handler: the local action that ran.
        message_id: the command's or reply's message id.
        actor: who asked, for an operator's request.
        delay_s: the backoff before the next attempt.
        note: free prose, for entries that are nothing else (old history).
    """

    kind: HistoryKind
    step: str | None = None
    attempt: int | None = None
    purpose: Purpose | None = None
    outcome: str | None = None
    reason: str | None = None
    message_type: str | None = None
    participant: str | None = None
    handler: str | None = None
    message_id: uuid.UUID | None = None
    actor: str | None = None
    delay_s: float | None = None
    note: str | None = None

    @property
    def detail(self) -> str:
        """The entry as one sentence, for people."""
        return describe(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRow(HistoryEntry):
    """A stored history entry, with the time it was recorded."""

    at: datetime


def describe(e: HistoryEntry) -> str:
    """One sentence for an entry (the sentences history used to store verbatim)."""
    if e.note is not None:
        # Prose is all there is of it (history written before entries were typed).
        return e.note
    k = HistoryKind
    action = e.message_type or e.handler or "?"
    result = f"{e.outcome}: {e.reason}" if e.reason else f"{e.outcome}"
    match e.kind:
        case k.COMMAND_SENT:
            return f"{e.message_type} to {e.participant} ({e.purpose}, attempt {e.attempt})"
        case k.REPLY_RECEIVED:
            return f"{e.message_type} ({result})"
        case k.STALE_REPLY:
            return f"{e.message_type} ignored: not for the attempt in flight"
        case k.LOCAL_ACTION:
            return f"{e.handler} ({result})"
        case k.ADMIN_RETRY | k.ADMIN_ABORT:
            return f"requested by {e.actor}"
        case k.SAGA_STARTED:
            return "saga started"
        case k.STEP_SUCCEEDED:
            return f"step {e.step} succeeded"
        case k.STEP_COMPENSATED:
            return f"step {e.step} compensated"
        case k.STEP_REJECTED:
            return f"step {e.step} rejected: {e.reason}"
        case k.EPILOGUE_DONE:
            return f"{action} done"
        case k.ATTEMPT_FAILED:
            return f"{_label(e)} attempt {e.attempt} failed: {e.reason}"
        case k.RETRY_SCHEDULED:
            return f"retrying in {e.delay_s or 0:g}s"
        case k.RETRY_STARTED:
            return f"retry attempt {e.attempt}"
        case k.SAGA_RESUMED:
            return "operator retry: fresh attempt budget"
        case k.SAGA_ABORTED:
            return "operator abort: compensating"
        case k.SAGA_ENDED:
            return f"saga {e.outcome}: {e.reason}" if e.reason else f"saga {e.outcome}"
        case k.DEFINITION_REFUSED:
            return f"not driven: {e.reason}"
        case _:
            return e.note or str(e.kind)


def _label(e: HistoryEntry) -> str:
    """The step (or epilogue action) an attempt belongs to, with its phase unless forward."""
    if e.purpose is Purpose.EPILOGUE:
        return f"{e.message_type or e.handler} (epilogue)"
    if e.purpose is Purpose.COMPENSATION:
        return f"{e.step} ({_PHASE_WORD[Purpose.COMPENSATION]})"
    return f"{e.step}"
