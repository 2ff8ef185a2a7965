"""Notification's command handler: record the message for the customer, once per saga."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.participants import CommandContext, Participant, Reply, Succeeded
from sagaway.services import contracts as c
from sagaway.services.notification.tables import metadata, notifications

_TEXTS = {
    "order_approved": "Your order {order_id} is approved.",
    "order_rejected": "Your order {order_id} could not be completed ({reason}).",
}


notification = Participant(
    "notification", description="Records the message for the customer.", metadata=metadata
)


@notification.handles(c.NotifyCustomer, replies=(c.CustomerNotified,))
async def notify(session: AsyncSession, command: c.NotifyCustomer, ctx: CommandContext) -> Reply:
    """Record the customer's message (the delivery channel is out of scope)."""
    text = _TEXTS[command.template].format(order_id=command.order_id, reason=command.reason)
    await session.execute(
        insert(notifications)
        .values(
            saga_id=ctx.saga_id,
            order_id=command.order_id,
            customer_id=command.customer_id,
            template=command.template,
            text=text,
        )
        .on_conflict_do_nothing(constraint="uq_notifications_saga_template")
    )
    return Succeeded(reply_type=c.CUSTOMER_NOTIFIED)
