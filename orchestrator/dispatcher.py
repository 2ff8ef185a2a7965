"""Runs a participant's commands: command → its handler → the reply, in its outbox.

The consumer around it records the inbox entry and commits; this module only maps a
command to its handler and turns the handler's answer into a reply row, in the same
transaction as the handler's effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.participants import (
    CommandContext,
    CommandRoute,
    Failed,
    Participant,
    Reply,
    reply_parts,
)
from sagaway.orchestrator.protocol import make_reply
from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.errors import Unprocessable
from sagaway.outbox.writer import OutboxWriter

log = structlog.get_logger(__name__)

OutageCheck = Callable[[AsyncSession, str], Awaitable[bool]]
"""True while the named participant must act as if its provider were down."""


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where replies go."""

    exchange: str
    routing_key: str


class CommandDispatcher:
    """Dispatches a participant's commands to its handlers and writes each reply to the
    participant's outbox."""

    def __init__(
        self,
        participant: Participant,
        *,
        reply_to: ReplyAddress,
        outage: OutageCheck | None = None,
    ) -> None:
        self.name = participant.name
        self._routes = participant.routes
        self._outage = outage
        self._outbox = OutboxWriter(participant.outbox)
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
        reply: Reply
        if self._outage is not None and await self._outage(session, self.name):
            # A simulated provider outage answers like a real one: a technical error the
            # orchestrator retries, with nothing applied.
            reply = Failed(f"{self.name} unavailable (simulated outage)")
        else:
            reply = await route.handler(
                session,
                command,
                CommandContext(
                    saga_id=envelope.saga_id,
                    message_id=envelope.message_id,
                    correlation_id=envelope.correlation_id,
                    message_type=envelope.message_type,
                ),
            )
        outcome, reason, fields = reply_parts(reply)
        log.info(
            "command handled",
            participant=self.name,
            command=envelope.message_type,
            outcome=outcome.value,
            reason=reason,
        )
        answer = make_reply(
            envelope,
            message_type=route.default_reply_type(reply),
            outcome=outcome,
            reason=reason,
            detail=fields,
        )
        await self._outbox.add(
            session,
            OutgoingMessage(
                envelope=answer,
                exchange=self._reply_to.exchange,
                routing_key=self._reply_to.routing_key,
            ),
        )

    def _command(self, envelope: Envelope) -> tuple[CommandRoute, BaseModel]:
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
