"""The application registry: the sagas, participants and local steps one installation
runs, and everything derived from them.

Queues and bindings, outbox and inbox tables, the worker names the command line
accepts, what ``sagaway up`` starts, the fault switches, the dashboard, AsyncAPI and
metrics labels are all read from a :class:`SagaApp`; nothing about a saga is written
in a second place. The application is validated when it is built, so a saga that
names a command no participant handles fails at start, not at run time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from sagaway.orchestrator import tables as orchestrator_tables
from sagaway.orchestrator.coordinator import Clock, LocalHandler, Routing, SagaCoordinator
from sagaway.orchestrator.dsl import DefinitionError, Local, RetryPolicy, SagaDefinition
from sagaway.orchestrator.participants import (
    COMMAND_FAILED,
    ORCHESTRATOR,
    CommandFailed,
    Participant,
)
from sagaway.orchestrator.protocol import ReplyBody
from sagaway.outbox.amqp import QueueSpec, Topology
from sagaway.outbox.settings import Settings
from sagaway.outbox.writer import OutboxWriter

_APP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
# Schemas that hold sagaway's own tables (the orchestrator's outbox among them) or
# PostgreSQL's: no participant may put its outbox and inbox there.
RESERVED_SCHEMAS = frozenset(
    {"sagas", "ops", "orders", "public", "information_schema", "pg_catalog"}
)

Seeder = Callable[[AsyncConnection], Awaitable[str]]
"""``sagaway seed``: adds demo rows in the connection's transaction; says what it added."""


@dataclass(frozen=True, slots=True)
class Names:
    """Broker names of one installation (``SAGAWAY_NAMESPACE``)."""

    namespace: str

    @property
    def commands_exchange(self) -> str:
        """Commands to participants, routed by participant name."""
        return f"{self.namespace}.commands"

    @property
    def replies_exchange(self) -> str:
        """Replies to the orchestrator."""
        return f"{self.namespace}.replies"

    @property
    def dead_letter_exchange(self) -> str:
        """Where queues send what they give up on."""
        return f"{self.namespace}.dead-letter"

    def queue(self, consumer: str) -> str:
        """The queue a consumer (a participant or the orchestrator) reads."""
        return f"{self.namespace}.{consumer}"


def default_retry_policy(settings: Settings) -> RetryPolicy:
    """The retry policy of steps that do not set their own (``SAGAWAY_STEP_*``)."""
    return RetryPolicy(
        max_attempts=settings.step_max_attempts,
        initial_interval_s=settings.step_backoff_s,
        max_interval_s=settings.step_backoff_cap_s,
        timeout_s=settings.step_timeout_s,
    )


class SagaApp:
    """A saga application: what ``sagaway --app module:attribute`` runs.

    Args:
        name: the application's name (snake_case); its migrations' version table is
            named after it.
        sagas: the saga definitions.
        participants: the services that handle the sagas' commands.
        local_steps: handler name → the function a :class:`Local` step runs in the
            orchestrator's transaction.
        migrations: the import name of the package that holds the application's own
            Alembic revisions (``trips.migrations``), applied by ``sagaway migrate``
            after sagaway's, with a version history of their own.
        routers: FastAPI ``APIRouter`` objects the API serves next to sagaway's own
            routes (the order application adds ``/orders``).
        seed: what ``sagaway seed`` adds (demo data), if anything.
        metadata: SQLAlchemy ``MetaData`` of the application's own tables, for tests
            that compare them with the migrated database.

    Raises:
        DefinitionError: the application is inconsistent (a command no participant
            handles, a local step with no handler, a duplicate name, …).
    """

    def __init__(
        self,
        name: str,
        *,
        sagas: Sequence[SagaDefinition],
        participants: Sequence[Participant],
        local_steps: Mapping[str, LocalHandler] | None = None,
        migrations: str | None = None,
        routers: Sequence[Any] = (),
        seed: Seeder | None = None,
        metadata: Sequence[Any] = (),
    ) -> None:
        if not _APP_NAME.match(name):
            raise DefinitionError(f"application name {name!r} must be snake_case")
        self.name = name
        self.definitions: Mapping[str, SagaDefinition] = _unique(
            "saga", [(s.name, s) for s in sagas]
        )
        self.participants: Mapping[str, Participant] = _unique(
            "participant", [(p.name, p) for p in participants]
        )
        self.local_steps: Mapping[str, LocalHandler] = dict(local_steps or {})
        self.migrations = migrations
        self.routers = tuple(routers)
        self.seed = seed
        self.metadata = tuple(metadata)
        self._validate()

    # -- validation ---------------------------------------------------------------

    def _validate(self) -> None:
        if not self.definitions:
            raise DefinitionError(f"application {self.name} has no saga")
        schemas = [p.schema for p in self.participants.values()]
        repeated = sorted({s for s in schemas if schemas.count(s) > 1})
        if repeated:
            raise DefinitionError(f"application {self.name}: participants share schemas {repeated}")
        taken = sorted(set(schemas) & RESERVED_SCHEMAS)
        if taken:
            raise DefinitionError(
                f"application {self.name}: schemas {taken} are sagaway's own; "
                "give those participants another name or schema="
            )
        problems: list[str] = []
        for saga in self.definitions.values():
            for where, action in saga.actions():
                if isinstance(action, Local):
                    if action.handler not in self.local_steps:
                        problems.append(
                            f"saga {saga.name} {where}: no local step named {action.handler!r}"
                        )
                    continue
                participant = self.participants.get(action.participant)
                if participant is None:
                    problems.append(
                        f"saga {saga.name} {where}: no participant named {action.participant!r}"
                    )
                elif action.command not in participant.routes:
                    problems.append(
                        f"saga {saga.name} {where}: participant {action.participant} does not "
                        f"handle {action.command}"
                    )
        handled: dict[str, str] = {}
        for participant in self.participants.values():
            for command in participant.routes:
                if command in handled:
                    problems.append(
                        f"command {command} is handled by both {handled[command]} and "
                        f"{participant.name}"
                    )
                handled[command] = participant.name
        if problems:
            raise DefinitionError(f"application {self.name}: " + "; ".join(problems))

    # -- what follows from it -----------------------------------------------------

    @property
    def participant_names(self) -> tuple[str, ...]:
        """The participants, in the order they were given (workers, fault switches)."""
        return tuple(self.participants)

    def participant(self, name: str) -> Participant:
        """The participant called ``name``.

        Raises:
            KeyError: with the names that exist.
        """
        try:
            return self.participants[name]
        except KeyError:
            raise KeyError(
                f"application {self.name} has no participant {name!r} "
                f"(it has {', '.join(self.participants)})"
            ) from None

    @cached_property
    def outbox_tables(self) -> Mapping[str, Table]:
        """Every outbox the relay drains: the orchestrator's and each participant's."""
        return {ORCHESTRATOR: orchestrator_tables.outbox} | {
            name: p.outbox for name, p in self.participants.items()
        }

    @cached_property
    def inbox_tables(self) -> Mapping[str, Table]:
        """Every inbox: the orchestrator's and each participant's."""
        return {ORCHESTRATOR: orchestrator_tables.inbox} | {
            name: p.inbox for name, p in self.participants.items()
        }

    @cached_property
    def command_models(self) -> Mapping[str, type[BaseModel]]:
        """Command message type → the model of its payload."""
        return {c: r.model for p in self.participants.values() for c, r in p.routes.items()}

    @cached_property
    def replies(self) -> Mapping[str, tuple[str, ...]]:
        """Command message type → every reply type its participant may answer with."""
        return {c: r.reply_types for p in self.participants.values() for c, r in p.routes.items()}

    @cached_property
    def reply_models(self) -> Mapping[str, type[BaseModel]]:
        """Reply message type → the model of its payload (the generic reply body where
        a participant named no model)."""
        models: dict[str, type[BaseModel]] = {}
        for participant in self.participants.values():
            for route in participant.routes.values():
                named = {m.__name__: m for m in route.replies}
                for reply_type in route.reply_types:
                    models.setdefault(reply_type, named.get(reply_type, ReplyBody))
        models[COMMAND_FAILED] = CommandFailed
        return models

    def commands_of(self, participant: str) -> tuple[str, ...]:
        """The command types ``participant`` handles."""
        return tuple(self.participant(participant).routes)

    def topology(self, *, namespace: str, queue_type: str, delivery_limit: int) -> Topology:
        """Everything the installation declares on the broker: one command queue per
        participant, bound by its name, and the orchestrator's reply queue."""
        names = Names(namespace)
        queues = [
            QueueSpec(name=names.queue(p), exchange=names.commands_exchange, routing_keys=(p,))
            for p in self.participants
        ]
        queues.append(
            QueueSpec(
                name=names.queue(ORCHESTRATOR),
                exchange=names.replies_exchange,
                routing_keys=(ORCHESTRATOR,),
            )
        )
        return Topology(
            exchanges=(names.commands_exchange, names.replies_exchange),
            queues=tuple(queues),
            dead_letter_exchange=names.dead_letter_exchange,
            queue_type=queue_type,  # type: ignore[arg-type]  # checked by Settings
            delivery_limit=delivery_limit,
        )

    def topology_for(self, settings: Settings) -> Topology:
        """The topology under ``settings``' namespace, queue type and delivery limit."""
        return self.topology(
            namespace=settings.namespace,
            queue_type=settings.queue_type,
            delivery_limit=settings.delivery_limit,
        )

    def saga_coordinator(
        self, settings: Settings, *, clock: Clock | None = None
    ) -> SagaCoordinator:
        """The saga coordinator of this application's sagas and local steps, with the
        default retry policy and broker names of ``settings``."""
        return SagaCoordinator(
            definitions=self.definitions,
            defaults=default_retry_policy(settings),
            local_handlers=self.local_steps,
            outbox=OutboxWriter(orchestrator_tables.outbox),
            routing=Routing(commands_exchange=Names(settings.namespace).commands_exchange),
            reply_types=set(self.reply_models),
            clock=clock or (lambda: datetime.now(UTC)),
        )

    def __repr__(self) -> str:
        return (
            f"SagaApp({self.name!r}, sagas={list(self.definitions)}, "
            f"participants={list(self.participants)})"
        )


def _unique(kind: str, named: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [n for n, _ in named]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DefinitionError(f"{kind} names repeated: {repeated}")
    return dict(named)
