"""``sagaway relay``: drains every outbox to RabbitMQ."""

from __future__ import annotations

from outbox.publisher import AioPikaPublisher
from outbox.relay import Relay, RelayOptions
from sagaway.runners.lifecycle import resources, stop_on_signals
from sagaway.settings import Settings
from sagaway.topology import OUTBOX_TABLES


async def run_relay(settings: Settings) -> None:
    """Relay until SIGTERM; a batch in flight is finished (or left unpublished)."""
    stop = stop_on_signals()
    async with resources(settings, name="sagaway-relay", pool_size=2) as res:
        relay = Relay(
            engine=res.db,
            tables=list(OUTBOX_TABLES.values()),
            publisher=AioPikaPublisher(res.broker, timeout_s=settings.publish_timeout_s),
            options=RelayOptions(
                batch_size=settings.relay_batch_size,
                poll_interval_s=settings.relay_poll_interval_s,
            ),
        )
        await relay.run(stop)
