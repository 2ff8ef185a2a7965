"""Notification's command handler: record the message for the customer, once per saga."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.state import Outcome
from sagaway.outbox.envelope import Envelope
from sagaway.services import contracts as c
from sagaway.services.notification.tables import notifications
from sagaway.services.participant import Answer, Route

_TEXTS = {
    "order_approved": "Your order {order_id} is approved.",
    "order_rejected": "Your order {order_id} could not be completed ({reason}).",
}


async def notify(session: AsyncSession, envelope: Envelope, command: Any) -> Answer:
    """Record the customer's message (the delivery channel is out of scope)."""
    assert isinstance(command, c.NotifyCustomer)
    text = _TEXTS[command.template].format(order_id=command.order_id, reason=command.reason)
    await session.execute(
        insert(notifications)
        .values(
            saga_id=envelope.saga_id,
            order_id=command.order_id,
            customer_id=command.customer_id,
            template=command.template,
            text=text,
        )
        .on_conflict_do_nothing(constraint="uq_notifications_saga_template")
    )
    return Answer(c.CUSTOMER_NOTIFIED, Outcome.SUCCEEDED)


ROUTES = {"NotifyCustomer": Route(c.NotifyCustomer, notify)}
