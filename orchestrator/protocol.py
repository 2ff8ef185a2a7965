"""The participant protocol: how a command is answered.

Every reply names the command it answers through ``causation_id`` and says one of
three things in its payload: succeeded, rejected (a business decision, with a reason
code) or failed (a technical error, worth retrying).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagaway.orchestrator.state import Outcome
from sagaway.outbox.envelope import Envelope


class ReplyBody(BaseModel):
    """The payload of every reply."""

    model_config = ConfigDict(frozen=True, extra="allow")

    outcome: Outcome
    reason: str | None = Field(default=None, max_length=500)


def make_reply(
    command: Envelope,
    *,
    message_type: str,
    outcome: Outcome,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Envelope:
    """Build the reply envelope to ``command``."""
    payload: dict[str, Any] = {"outcome": outcome.value, "reason": reason, **(detail or {})}
    return Envelope(
        message_id=uuid.uuid4(),
        message_type=message_type,
        saga_id=command.saga_id,
        correlation_id=command.correlation_id,
        causation_id=command.message_id,
        payload=payload,
    )
