"""sagaway's exchanges, queues and outboxes, named under the configured namespace."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Table

from sagaway.orchestrator import tables as orchestrator_tables
from sagaway.outbox.amqp import QueueSpec, Topology
from sagaway.services.inventory import tables as inventory_tables
from sagaway.services.notification import tables as notification_tables
from sagaway.services.payment import tables as payment_tables
from sagaway.settings import Settings

PARTICIPANTS = ("inventory", "payment", "notification")
ORCHESTRATOR = "orchestrator"


@dataclass(frozen=True, slots=True)
class Names:
    """Broker names of one installation."""

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


def build_topology(settings: Settings) -> Topology:
    """Everything the installation declares on the broker."""
    names = Names(settings.namespace)
    queues = [
        QueueSpec(name=names.queue(p), exchange=names.commands_exchange, routing_keys=(p,))
        for p in PARTICIPANTS
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
        queue_type=settings.queue_type,
        delivery_limit=settings.delivery_limit,
    )


OUTBOX_TABLES: dict[str, Table] = {
    ORCHESTRATOR: orchestrator_tables.outbox,
    "inventory": inventory_tables.outbox,
    "payment": payment_tables.outbox,
    "notification": notification_tables.outbox,
}

INBOX_TABLES: dict[str, Table] = {
    ORCHESTRATOR: orchestrator_tables.inbox,
    "inventory": inventory_tables.inbox,
    "payment": payment_tables.inbox,
    "notification": notification_tables.inbox,
}
