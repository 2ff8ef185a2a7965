"""The participant protocol: how a command is answered.

Every reply names the command it answers through ``causation_id`` and says one of
three things in its payload: succeeded, rejected (a business decision, with a reason
code) or failed (a technical error, worth retrying).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagaway.orchestrator.state import Outcome
from sagaway.outbox.envelope import Envelope


class ReplyBody(BaseModel):
    """The payload of every reply."""

    model_config = ConfigDict(frozen=True, extra="allow")

    outcome: Outcome
    reason: str | None = Field(default=None, max_length=500)


def reply_payload(
    outcome: Outcome, reason: str | None = None, detail: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The payload of a reply: the protocol's ``outcome`` and ``reason``, then the
    participant's own fields (a succeeded reply's ``output`` among them)."""
    return {"outcome": outcome.value, "reason": reason, **(detail or {})}


def merged_output(
    data: Mapping[str, Any], body: ReplyBody, payload: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The saga's data with a succeeded reply's ``output`` merged in, or None when the
    reply carries no output to merge (data flows forward: later steps and compensations
    build their commands from it)."""
    output = payload.get("output")
    if body.outcome is Outcome.SUCCEEDED and isinstance(output, dict) and output:
        return {**data, **output}
    return None


def make_reply(
    command: Envelope,
    *,
    message_type: str,
    outcome: Outcome,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Envelope:
    """Build the reply envelope to ``command``."""
    payload = reply_payload(outcome, reason, detail)
    return Envelope(
        message_id=uuid.uuid4(),
        message_type=message_type,
        saga_id=command.saga_id,
        correlation_id=command.correlation_id,
        causation_id=command.message_id,
        payload=payload,
    )
