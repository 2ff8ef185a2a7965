"""``sagaway worker NAME``: one participant of the application."""

from __future__ import annotations

import asyncio
from functools import partial

import structlog

from sagaway.metrics_server import serve_metrics
from sagaway.orchestrator.application import Names
from sagaway.outbox.consumer import Consumer
from sagaway.outbox.database import raw_connect
from sagaway.outbox.inbox import Inbox
from sagaway.outbox.settings import Settings
from sagaway.outbox.wakeup import Wakeup
from sagaway.runners.lifecycle import handoff, readiness, resources, stop_on_signals
from sagaway.services.ops.faults import FAULTS_CHANNEL, FaultFlags
from sagaway.wiring import application, build_dispatcher

log = structlog.get_logger(__name__)


async def run_worker(
    settings: Settings, participant: str, *, stop: asyncio.Event | None = None
) -> None:
    """Consume the participant's command queue until SIGTERM."""
    stop = stop or stop_on_signals()
    switches = Wakeup(partial(raw_connect, settings.database_url), channel=FAULTS_CHANNEL)
    flags = FaultFlags(switches)
    handler = build_dispatcher(participant, settings, outage=flags.in_outage)
    inbox_table = application(settings).inbox_tables[participant]
    async with resources(settings, name=f"sagaway-{participant}") as res:
        serve_metrics(settings, readiness(res))
        consumer = Consumer(
            queue=Names(settings.namespace).queue(participant),
            inbox=Inbox(inbox_table, participant),
            handler=handler.handle,
            sessions=res.sessions,
            prefetch=settings.consumer_prefetch,
            delivery_limit=settings.delivery_limit,
            handoff=handoff(settings, res),
            screen=handler.screen,
            max_message_bytes=settings.max_message_bytes,
        )
        channel = await res.broker.channel()
        await asyncio.gather(switches.run(stop), consumer.run(channel, stop))
