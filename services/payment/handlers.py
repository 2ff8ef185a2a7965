"""Payment: authorize the order total against the customer's remaining credit; void."""

from __future__ import annotations

from functools import cache

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.claims import claim_for_saga, set_saga_status
from sagaway.orchestrator.participants import (
    CommandContext,
    Failed,
    Participant,
    Rejected,
    Reply,
    Succeeded,
)
from sagaway.outbox.settings import Settings
from sagaway.services import contracts as c
from sagaway.services.payment.tables import authorizations, customers, metadata

AUTHORIZED = "AUTHORIZED"
REJECTED = "REJECTED"
VOIDED = "VOIDED"

payment = Participant(
    "payment", description="Authorizes order totals against customer credit.", metadata=metadata
)


@cache
def default_credit_limit_cents() -> int:
    """The credit of a customer never seen before (``SAGAWAY_DEFAULT_CREDIT_LIMIT_CENTS``),
    read once per process."""
    return Settings().default_credit_limit_cents


@payment.handles(c.AuthorizePayment, replies=(c.PaymentAuthorized, c.PaymentRejected))
async def authorize(
    session: AsyncSession, command: c.AuthorizePayment, ctx: CommandContext
) -> Reply:
    """Authorize the total, or reject it (``insufficient_funds``)."""
    existing = await claim_for_saga(
        session,
        authorizations,
        ctx.saga_id,
        {
            "order_id": command.order_id,
            "customer_id": command.customer_id,
            "amount_cents": command.amount_cents,
            "status": AUTHORIZED,
        },
    )
    if existing is not None:
        return _answer_for(existing["status"])

    # One statement creates a customer never seen before and locks the row either
    # way: the no-op update of a conflict takes the row lock, as FOR UPDATE would.
    stmt = insert(customers).values(
        customer_id=command.customer_id,
        credit_limit_cents=default_credit_limit_cents(),
        authorized_cents=0,
    )
    customer = (
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[customers.c.customer_id],
                set_={"customer_id": stmt.excluded.customer_id},
            ).returning(customers.c.credit_limit_cents, customers.c.authorized_cents)
        )
    ).one()
    remaining = customer.credit_limit_cents - customer.authorized_cents
    if remaining < command.amount_cents:
        await set_saga_status(session, authorizations, ctx.saga_id, REJECTED)
        return Rejected(
            c.INSUFFICIENT_FUNDS,
            reply_type=c.PAYMENT_REJECTED,
            detail={"remaining_cents": remaining},
        )
    await session.execute(
        update(customers)
        .where(customers.c.customer_id == command.customer_id)
        .values(
            authorized_cents=customers.c.authorized_cents + command.amount_cents,
            updated_at=func.now(),
        )
    )
    return Succeeded(reply_type=c.PAYMENT_AUTHORIZED)


@payment.handles(c.VoidPayment, replies=(c.PaymentVoided,))
async def void(session: AsyncSession, command: c.VoidPayment, ctx: CommandContext) -> Reply:
    """Release the saga's authorization; a no-op that leaves a tombstone otherwise."""
    existing = await claim_for_saga(
        session,
        authorizations,
        ctx.saga_id,
        {"order_id": command.order_id, "customer_id": "", "amount_cents": 0, "status": VOIDED},
        lock=True,
    )
    if existing is not None and existing["status"] == AUTHORIZED:
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == existing["customer_id"])
            .values(
                authorized_cents=customers.c.authorized_cents - existing["amount_cents"],
                updated_at=func.now(),
            )
        )
        await set_saga_status(session, authorizations, ctx.saga_id, VOIDED)
    return Succeeded(reply_type=c.PAYMENT_VOIDED)


def _answer_for(status: str) -> Reply:
    if status == AUTHORIZED:
        return Succeeded(reply_type=c.PAYMENT_AUTHORIZED, detail={"reused": True})
    if status == REJECTED:
        return Rejected(c.INSUFFICIENT_FUNDS, reply_type=c.PAYMENT_REJECTED)
    return Failed("authorization already voided for this saga")
