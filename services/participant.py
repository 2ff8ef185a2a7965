"""The scaffold every participant shares: command → handler → reply to its outbox.

The consumer around it records the inbox entry and commits; this module only maps a
command to its handler and turns the handler's answer into a reply row, in the same
transaction as the handler's effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.protocol import make_reply
from sagaway.orchestrator.state import Outcome
from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.errors import Unprocessable
from sagaway.outbox.writer import OutboxWriter
from sagaway.services.contracts import COMMAND_FAILED

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a command handler decided."""

    message_type: str
    outcome: Outcome
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


CommandHandler = Callable[[AsyncSession, Envelope, Any], Awaitable[Answer]]
OutageCheck = Callable[[AsyncSession, str], Awaitable[bool]]
"""True while the named participant must act as if its provider were down."""


@dataclass(frozen=True, slots=True)
class Route:
    """A command type, the model its payload must fit, and its handler."""

    model: type[BaseModel]
    handler: CommandHandler


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where replies go."""

    exchange: str
    routing_key: str


class Participant:
    """Dispatches commands to handlers and writes each reply to the outbox."""

    def __init__(
        self,
        *,
        name: str,
        routes: Mapping[str, Route],
        outbox: OutboxWriter,
        reply_to: ReplyAddress,
        outage: OutageCheck | None = None,
    ) -> None:
        self.name = name
        self._outage = outage
        self._routes = dict(routes)
        self._outbox = outbox
        self._reply_to = reply_to

    def screen(self, envelope: Envelope) -> None:
        """Refuse, before any transaction, a command this participant can never apply:
        a type it has no handler for, or a payload that does not fit its model.

        Raises:
            Unprocessable: with reason ``unknown_type`` or ``invalid_payload``.
        """
        self._command(envelope)

    async def handle(self, session: AsyncSession, envelope: Envelope) -> None:
        """Apply one command and queue its reply, in the caller's transaction."""
        route, command = self._command(envelope)
        if self._outage is not None and await self._outage(session, self.name):
            # A simulated provider outage answers like a real one: a technical error the
            # orchestrator retries, with nothing applied.
            answer = Answer(
                COMMAND_FAILED, Outcome.FAILED, f"{self.name} unavailable (simulated outage)"
            )
        else:
            answer = await route.handler(session, envelope, command)
        log.info(
            "command handled",
            participant=self.name,
            command=envelope.message_type,
            outcome=answer.outcome.value,
            reason=answer.reason,
        )
        reply = make_reply(
            envelope,
            message_type=answer.message_type,
            outcome=answer.outcome,
            reason=answer.reason,
            detail=answer.detail,
        )
        await self._outbox.add(
            session,
            OutgoingMessage(
                envelope=reply,
                exchange=self._reply_to.exchange,
                routing_key=self._reply_to.routing_key,
            ),
        )

    def _command(self, envelope: Envelope) -> tuple[Route, BaseModel]:
        route = self._routes.get(envelope.message_type)
        if route is None:
            raise Unprocessable(
                f"{self.name} does not handle {envelope.message_type}", reason="unknown_type"
            )
        try:
            return route, route.model.model_validate(envelope.payload)
        except ValidationError as exc:
            raise Unprocessable(
                f"invalid {envelope.message_type}: {exc.error_count()} errors",
                reason="invalid_payload",
            ) from exc
