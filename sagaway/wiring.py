"""Builds the engine and the participants from settings: the composition root."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator import tables as orchestrator_tables
from sagaway.orchestrator.definitions import DEFINITIONS
from sagaway.orchestrator.dsl import RetryPolicy
from sagaway.orchestrator.engine import Routing, SagaEngine
from sagaway.outbox.writer import OutboxWriter
from sagaway.services import contracts
from sagaway.services.inventory import handlers as inventory
from sagaway.services.notification import handlers as notification
from sagaway.services.ops import faults
from sagaway.services.orders import local_steps
from sagaway.services.participant import OutageCheck, Participant, ReplyAddress, Route
from sagaway.services.payment.handlers import PaymentHandlers
from sagaway.settings import Settings
from sagaway.topology import ORCHESTRATOR, OUTBOX_TABLES, Names


def default_retry_policy(settings: Settings) -> RetryPolicy:
    """The retry policy of steps that do not set their own."""
    return RetryPolicy(
        max_attempts=settings.step_max_attempts,
        initial_interval_s=settings.step_backoff_s,
        max_interval_s=settings.step_backoff_cap_s,
        timeout_s=settings.step_timeout_s,
    )


def build_engine(settings: Settings) -> SagaEngine:
    """The saga engine with the order saga and its local actions."""
    return SagaEngine(
        definitions=DEFINITIONS,
        defaults=default_retry_policy(settings),
        local_handlers=local_steps.HANDLERS,
        outbox=OutboxWriter(orchestrator_tables.outbox),
        routing=Routing(commands_exchange=Names(settings.namespace).commands_exchange),
        reply_types=contracts.REPLY_MODELS,
    )


def build_participant(
    name: str, settings: Settings, *, outage: OutageCheck | None = None
) -> Participant:
    """One of inventory, payment, notification.

    ``outage`` says whether a simulated outage is on; by default the switch is read
    from the database on every command (a worker passes ``FaultFlags.in_outage``).
    """
    routes: dict[str, Route]
    if name == "inventory":
        routes = inventory.ROUTES
    elif name == "payment":
        routes = PaymentHandlers(
            default_credit_limit_cents=settings.default_credit_limit_cents
        ).routes()
    elif name == "notification":
        routes = notification.ROUTES
    else:
        raise ValueError(f"unknown participant {name!r}")
    return Participant(
        name=name,
        routes=routes,
        outbox=OutboxWriter(OUTBOX_TABLES[name]),
        reply_to=ReplyAddress(
            exchange=Names(settings.namespace).replies_exchange, routing_key=ORCHESTRATOR
        ),
        outage=outage or _in_outage,
    )


async def _in_outage(session: AsyncSession, participant: str) -> bool:
    return await faults.get_mode(session, participant) is faults.FaultMode.UNAVAILABLE
