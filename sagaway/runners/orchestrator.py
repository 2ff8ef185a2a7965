"""``sagaway orchestrator``: consumes replies and wakes sagas whose time has come."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.definition_report import report_definitions
from sagaway.metrics_server import serve_metrics
from sagaway.orchestrator.application import Names
from sagaway.orchestrator.coordinator import SagaCoordinator
from sagaway.orchestrator.participants import ORCHESTRATOR
from sagaway.outbox.consumer import Consumer
from sagaway.outbox.inbox import Inbox
from sagaway.outbox.settings import Settings
from sagaway.runners.lifecycle import handoff, readiness, resources, stop_on_signals
from sagaway.wiring import application, build_coordinator

log = structlog.get_logger(__name__)

SWEEP_INTERVAL_S = 0.2
SWEEP_BATCH = 50
MAX_SWEEP_BACKOFF_S = 5.0


async def run_orchestrator(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the reply consumer and the deadline sweeper until SIGTERM."""
    stop = stop or stop_on_signals()
    coordinator = build_coordinator(settings)
    async with resources(settings, name="sagaway-orchestrator") as res:
        serve_metrics(settings, readiness(res))
        await report_definitions(res.sessions, application(settings))
        consumer = Consumer(
            queue=Names(settings.namespace).queue(ORCHESTRATOR),
            inbox=Inbox(application(settings).inbox_tables[ORCHESTRATOR], ORCHESTRATOR),
            handler=coordinator.handle_reply,
            prepare=coordinator.prepare_replies,
            sessions=res.sessions,
            prefetch=settings.consumer_prefetch,
            delivery_limit=settings.delivery_limit,
            handoff=handoff(settings, res),
            screen=coordinator.screen_reply,
            max_message_bytes=settings.max_message_bytes,
        )
        channel = await res.broker.channel()
        await asyncio.gather(
            consumer.run(channel, stop),
            sweep(coordinator, res.sessions, stop),
        )


async def sweep(
    coordinator: SagaCoordinator, sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event
) -> None:
    """Wake sagas whose deadline or backoff has passed.

    Reads only the partial index of sagas that wait for something, and claims with
    SKIP LOCKED, so any number of orchestrators sweep side by side cheaply.
    """
    backoff = SWEEP_INTERVAL_S
    while not stop.is_set():
        woken = 0
        try:
            async with sessions() as session, session.begin():
                due = await coordinator.repository.claim_due(
                    session, datetime.now(UTC), SWEEP_BATCH
                )
                for saga_id in due:
                    with structlog.contextvars.bound_contextvars(saga_id=str(saga_id)):
                        await coordinator.wake(session, saga_id)
                woken = len(due)
        except (OperationalError, DBAPIError, OSError) as exc:
            # Doubling, like the relay: an outage is logged a handful of times, not
            # five times a second, and the server is not asked for nothing meanwhile.
            log.warning(
                "sweeper cannot reach the database", error=type(exc).__name__, retry_in_s=backoff
            )
            await _pause(stop, backoff)
            backoff = min(backoff * 2, MAX_SWEEP_BACKOFF_S)
            continue
        backoff = SWEEP_INTERVAL_S
        if woken < SWEEP_BATCH:
            await _pause(stop, SWEEP_INTERVAL_S)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
