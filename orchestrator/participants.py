"""Participants as a team defines them: a named service and one handler per command.

A handler receives the command's own pydantic model and answers with one of three
replies: :class:`Succeeded` (with an optional output merged into the saga's data),
:class:`Rejected` (a business reason code: the saga compensates) or :class:`Failed`
(a technical error: the orchestrator retries the step). It runs inside the
participant's transaction, together with the inbox entry and the reply's outbox row.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.dsl import DefinitionError
from sagaway.orchestrator.state import Outcome
from sagaway.outbox.tables import inbox_table, outbox_table

COMMAND_FAILED = "CommandFailed"
"""The reply type of a technical failure, whatever the command."""

ORCHESTRATOR = "orchestrator"
"""The name of the orchestrator's own queue and schema; no participant may take it."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_MESSAGE_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]{0,127}$")

M = TypeVar("M", bound=BaseModel)


class CommandFailed(BaseModel):
    """A technical failure (an outage, a command that arrived too late): the
    orchestrator retries the step with backoff until its attempts run out."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    outcome: Literal["failed"]
    reason: str = Field(max_length=500)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a handler may know of the message besides its payload.

    Attributes:
        saga_id: the saga the command belongs to: the natural idempotency key of a
            participant's effect (one reservation per saga, whatever arrives twice).
        message_id: this delivery's message (a retry of the step has a new one).
        correlation_id: the business correlation id the saga was started with.
        message_type: the command's type (``ReserveFlight``).
    """

    saga_id: uuid.UUID
    message_id: uuid.UUID
    correlation_id: uuid.UUID
    message_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Succeeded:
    """The command is applied.

    Attributes:
        output: merged into the saga's data, so later steps and compensations can use it
            (a booking reference, an authorization id). JSON values only.
        reply_type: the reply's message type; default ``<Command>Succeeded``.
        detail: extra reply fields that are not saga data (shown in the history).
    """

    output: Mapping[str, Any] = field(default_factory=dict)
    reply_type: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A business decision not to apply the command: the saga compensates.

    Attributes:
        reason: a reason code (``out_of_stock``), shown as the saga's failure reason.
        reply_type: the reply's message type; default ``<Command>Rejected``.
        detail: extra reply fields.
    """

    reason: str
    reply_type: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failed:
    """A technical failure (a provider down, a late command): the step is retried with
    backoff until its attempts run out, then the saga is FAILED for an operator."""

    reason: str
    reply_type: str = COMMAND_FAILED


Reply = Succeeded | Rejected | Failed
"""What a command handler answers."""


def reply_parts(reply: Reply) -> tuple[Outcome, str | None, dict[str, Any]]:
    """The reply's outcome, reason and payload fields besides those two (a succeeded
    reply's ``output`` among them), as the participant protocol carries them."""
    if isinstance(reply, Succeeded):
        fields = dict(reply.detail)
        if reply.output:
            fields["output"] = dict(reply.output)
        return Outcome.SUCCEEDED, None, fields
    if isinstance(reply, Failed):
        return Outcome.FAILED, reply.reason, {}
    return Outcome.REJECTED, reply.reason, dict(reply.detail)


HandlerFunction = Callable[[AsyncSession, M, CommandContext], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class CommandRoute:
    """One command a participant handles: its model, its handler and its reply models.

    ``replies`` documents the reply types (AsyncAPI, the reply consumer's screen); a
    participant that names none answers ``<Command>Succeeded``/``<Command>Rejected``.
    """

    command: str
    model: type[BaseModel]
    handler: Callable[[AsyncSession, Any, CommandContext], Awaitable[Reply]]
    replies: tuple[type[BaseModel], ...] = ()

    @property
    def reply_types(self) -> tuple[str, ...]:
        """Every message type this command may be answered with."""
        named = tuple(m.__name__ for m in self.replies)
        if not named:
            named = (f"{self.command}Succeeded", f"{self.command}Rejected")
        return (*named, COMMAND_FAILED) if COMMAND_FAILED not in named else named

    def default_reply_type(self, reply: Reply) -> str:
        """The message type of ``reply``: the one the handler named; else the declared
        reply model whose ``outcome`` admits the answer (a reply type nobody declared is
        refused by the orchestrator on arrival); else ``<Command>Succeeded`` or
        ``<Command>Rejected``."""
        if reply.reply_type is not None:
            return reply.reply_type
        outcome = Outcome.SUCCEEDED if isinstance(reply, Succeeded) else Outcome.REJECTED
        declared = _declared_for(self.replies, outcome)
        if declared is not None:
            return declared
        kind = "Succeeded" if outcome is Outcome.SUCCEEDED else "Rejected"
        return f"{self.command}{kind}"


def _declared_for(replies: tuple[type[BaseModel], ...], outcome: Outcome) -> str | None:
    """The one declared reply model whose ``outcome`` field admits ``outcome``."""
    fitting = [
        m.__name__
        for m in replies
        if "outcome" in m.model_fields
        and outcome.value in get_args(m.model_fields["outcome"].annotation)
    ]
    return fitting[0] if len(fitting) == 1 else None


class Participant:
    """A service that takes part in sagas: a name (its queue's routing key, its
    database schema) and one handler per command type.

    Example::

        flights = Participant("flights")

        @flights.handles(ReserveFlight)
        async def reserve(session, command: ReserveFlight, ctx) -> Reply:
            ...
            return Succeeded(output={"flight_booking": ref})
    """

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        schema: str | None = None,
        metadata: MetaData | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise DefinitionError(f"participant name {name!r} must be snake_case")
        if name == ORCHESTRATOR:
            raise DefinitionError(f"participant name {name!r} is reserved")
        self.name = name
        self.description = description
        self.schema = schema or name
        if not _NAME.match(self.schema):
            raise DefinitionError(f"participant schema {self.schema!r} must be snake_case")
        self._routes: dict[str, CommandRoute] = {}
        # A participant whose schema sagaway's own migrations create passes that
        # schema's metadata, which already holds its outbox and inbox.
        metadata = metadata if metadata is not None else MetaData(schema=self.schema)
        if metadata.schema != self.schema:
            raise DefinitionError(f"participant {name}: metadata is not of schema {self.schema}")
        outbox = metadata.tables.get(f"{self.schema}.outbox")
        inbox = metadata.tables.get(f"{self.schema}.inbox")
        self.outbox: Table = outbox if outbox is not None else outbox_table(metadata)
        """The participant's outbox (replies wait here for the relay)."""
        self.inbox: Table = inbox if inbox is not None else inbox_table(metadata)
        """The participant's inbox (commands it already applied)."""

    def handles(
        self,
        model: type[M],
        *,
        command: str | None = None,
        replies: tuple[type[BaseModel], ...] = (),
    ) -> Callable[[HandlerFunction[M]], HandlerFunction[M]]:
        """Register the decorated function as the handler of ``model``'s command.

        Args:
            model: the command's payload model; its class name is the message type
                unless ``command`` names it.
            command: the message type, CamelCase imperative (``ReserveFlight``).
            replies: the reply payload models, each named as its message type.
        """

        def register(handler: HandlerFunction[M]) -> HandlerFunction[M]:
            self.add(model, handler, command=command, replies=replies)
            return handler

        return register

    def add(
        self,
        model: type[M],
        handler: HandlerFunction[M],
        *,
        command: str | None = None,
        replies: tuple[type[BaseModel], ...] = (),
    ) -> None:
        """Register ``handler`` for ``model`` (the non-decorator form of :meth:`handles`)."""
        name = command or model.__name__
        if not _MESSAGE_TYPE.match(name):
            raise DefinitionError(f"command {name!r} must be a CamelCase message type")
        if name in self._routes:
            raise DefinitionError(f"participant {self.name} already handles {name}")
        self._routes[name] = CommandRoute(
            command=name,
            model=model,
            handler=handler,
            replies=replies,
        )

    @property
    def routes(self) -> Mapping[str, CommandRoute]:
        """Command type → its route."""
        return dict(self._routes)

    def __repr__(self) -> str:
        return f"Participant({self.name!r}, commands={sorted(self._routes)})"
