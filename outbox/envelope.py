"""The message envelope every command and reply travels in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""The largest body, by default, that the relay publishes and a consumer accepts."""


class Envelope(BaseModel):
    """A command or reply as it travels over the broker (JSON body).

    ``correlation_id`` ties every message of one business transaction together (it
    comes from the request that started the saga); ``causation_id`` is the
    ``message_id`` of the message that caused this one, so a reply names the exact
    command attempt it answers.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    message_type: str = Field(min_length=1, max_length=128)
    saga_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Serialise to the exact bytes that are stored and published."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Envelope:
        """Parse a body; raises ``pydantic.ValidationError`` when it is not an envelope."""
        return cls.model_validate_json(body)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """An envelope and where the relay must publish it."""

    envelope: Envelope
    exchange: str
    routing_key: str
