"""Builds the saga coordinator and the command dispatchers from settings and the
application: the composition root."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.application_loader import load_application
from sagaway.orchestrator.application import Names, SagaApp
from sagaway.orchestrator.coordinator import SagaCoordinator
from sagaway.orchestrator.dispatcher import CommandDispatcher, OutageCheck, ReplyAddress
from sagaway.orchestrator.participants import ORCHESTRATOR
from sagaway.outbox.amqp import Topology
from sagaway.outbox.settings import Settings
from sagaway.services.ops import faults


def application(settings: Settings) -> SagaApp:
    """The application ``settings.app`` names (imported once per process)."""
    return load_application(settings.app)


def build_coordinator(settings: Settings, app: SagaApp | None = None) -> SagaCoordinator:
    """The saga coordinator of the application's sagas and local steps."""
    return (app or application(settings)).saga_coordinator(settings)


def build_topology(settings: Settings, app: SagaApp | None = None) -> Topology:
    """Everything the installation declares on the broker."""
    return (app or application(settings)).topology_for(settings)


def build_dispatcher(
    name: str, settings: Settings, *, outage: OutageCheck | None = None
) -> CommandDispatcher:
    """The command dispatcher of the application's participant ``name``.

    ``outage`` says whether a simulated outage is on; by default the switch is read
    from the database on every command (a worker passes ``FaultFlags.in_outage``).
    """
    return CommandDispatcher(
        application(settings).participant(name),
        reply_to=ReplyAddress(
            exchange=Names(settings.namespace).replies_exchange, routing_key=ORCHESTRATOR
        ),
        outage=outage or _in_outage,
    )


async def _in_outage(session: AsyncSession, participant: str) -> bool:
    return await faults.get_mode(session, participant) is faults.FaultMode.UNAVAILABLE
