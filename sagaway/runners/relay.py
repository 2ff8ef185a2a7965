"""``sagaway relay``: drains every outbox to RabbitMQ and keeps the tables small."""

from __future__ import annotations

import asyncio
from functools import partial

from sagaway.metrics_server import serve_metrics
from sagaway.outbox.database import raw_connect
from sagaway.outbox.health import Health
from sagaway.outbox.janitor import Janitor, Retention
from sagaway.outbox.publisher import AioPikaPublisher
from sagaway.outbox.relay import Relay, RelayOptions
from sagaway.outbox.settings import Settings
from sagaway.outbox.wakeup import Wakeup
from sagaway.runners.lifecycle import readiness, resources, stop_on_signals
from sagaway.wiring import application


def relay_options(settings: Settings) -> RelayOptions:
    """The relay's options from settings."""
    return RelayOptions(
        batch_size=settings.relay_batch_size,
        concurrency=settings.relay_concurrency,
        poll_interval_s=settings.relay_poll_interval_s,
        lease_s=settings.relay_lease_s,
        max_attempts=settings.relay_max_attempts,
    )


async def run_relay(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Relay until SIGTERM; a batch in flight is finished (or left to its lease).

    With ``SAGAWAY_METRICS_PORT`` set, ``/readyz`` on that port answers 503 naming
    PostgreSQL or RabbitMQ while the relay cannot reach it (see ``readiness``)."""
    stop = stop or stop_on_signals()
    health = Health()
    async with resources(
        settings, name="sagaway-relay", pool_size=settings.relay_concurrency + 2
    ) as res:
        serve_metrics(settings, readiness(res, health))
        wakeup = Wakeup(partial(raw_connect, settings.database_url))
        relay = Relay(
            engine=res.db,
            tables=list(application(settings).outbox_tables.values()),
            publisher=AioPikaPublisher(
                res.broker,
                timeout_s=settings.publish_timeout_s,
                max_message_bytes=settings.max_message_bytes,
            ),
            options=relay_options(settings),
            wakeup=wakeup,
            health=health,
        )
        janitor = Janitor(
            engine=res.db,
            outboxes=list(application(settings).outbox_tables.values()),
            inboxes=list(application(settings).inbox_tables.values()),
            retention=Retention(
                outbox_s=settings.outbox_retention_s, inbox_s=settings.inbox_retention_s
            ),
        )
        await asyncio.gather(wakeup.run(stop), relay.run(stop), janitor.run(stop))
