"""Payment's command handlers: authorize against remaining credit; void."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.state import Outcome
from sagaway.outbox.envelope import Envelope
from sagaway.services import contracts as c
from sagaway.services.participant import Answer, Route
from sagaway.services.payment.tables import authorizations, customers

AUTHORIZED = "AUTHORIZED"
REJECTED = "REJECTED"
VOIDED = "VOIDED"


class PaymentHandlers:
    """Handlers bound to the default credit limit of customers never seen before."""

    def __init__(self, *, default_credit_limit_cents: int) -> None:
        self._default_limit = default_credit_limit_cents

    def routes(self) -> dict[str, Route]:
        """Command type → route."""
        return {
            "AuthorizePayment": Route(c.AuthorizePayment, self.authorize),
            "VoidPayment": Route(c.VoidPayment, self.void),
        }

    async def authorize(self, session: AsyncSession, envelope: Envelope, command: Any) -> Answer:
        """Authorize the total, or reject it (``insufficient_funds``)."""
        assert isinstance(command, c.AuthorizePayment)
        existing = await _claim(session, envelope, command, AUTHORIZED)
        if existing is not None:
            return _answer_for(existing)
        # One statement creates a customer never seen before and locks the row either
        # way: the no-op update of a conflict takes the row lock, as FOR UPDATE would.
        stmt = insert(customers).values(
            customer_id=command.customer_id,
            credit_limit_cents=self._default_limit,
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
            await _set_status(session, envelope, REJECTED)
            return Answer(
                c.PAYMENT_REJECTED,
                Outcome.REJECTED,
                c.INSUFFICIENT_FUNDS,
                {"remaining_cents": remaining},
            )
        await session.execute(
            update(customers)
            .where(customers.c.customer_id == command.customer_id)
            .values(
                authorized_cents=customers.c.authorized_cents + command.amount_cents,
                updated_at=func.now(),
            )
        )
        return Answer(c.PAYMENT_AUTHORIZED, Outcome.SUCCEEDED)

    async def void(self, session: AsyncSession, envelope: Envelope, command: Any) -> Answer:
        """Release the saga's authorization; a no-op that leaves a tombstone otherwise."""
        assert isinstance(command, c.VoidPayment)
        existing = await _claim(session, envelope, command, VOIDED, lock=True)
        if existing is not None and existing["status"] == AUTHORIZED:
            await session.execute(
                update(customers)
                .where(customers.c.customer_id == existing["customer_id"])
                .values(
                    authorized_cents=customers.c.authorized_cents - existing["amount_cents"],
                    updated_at=func.now(),
                )
            )
            await _set_status(session, envelope, VOIDED)
        return Answer(c.PAYMENT_VOIDED, Outcome.SUCCEEDED)


async def _claim(
    session: AsyncSession, envelope: Envelope, command: Any, status: str, *, lock: bool = False
) -> dict[str, Any] | None:
    """Insert the saga's authorization row with ``status``; if it exists, return it."""
    inserted = (
        await session.execute(
            insert(authorizations)
            .values(
                saga_id=envelope.saga_id,
                order_id=command.order_id,
                customer_id=getattr(command, "customer_id", ""),
                amount_cents=getattr(command, "amount_cents", 0),
                status=status,
            )
            .on_conflict_do_nothing(index_elements=[authorizations.c.saga_id])
            .returning(authorizations.c.saga_id)
        )
    ).first()
    if inserted is not None:
        return None
    query = select(
        authorizations.c.status, authorizations.c.customer_id, authorizations.c.amount_cents
    ).where(authorizations.c.saga_id == envelope.saga_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).one()
    return {"status": row.status, "customer_id": row.customer_id, "amount_cents": row.amount_cents}


async def _set_status(session: AsyncSession, envelope: Envelope, status: str) -> None:
    await session.execute(
        update(authorizations)
        .where(authorizations.c.saga_id == envelope.saga_id)
        .values(status=status, updated_at=func.now())
    )


def _answer_for(existing: dict[str, Any]) -> Answer:
    if existing["status"] == AUTHORIZED:
        return Answer(c.PAYMENT_AUTHORIZED, Outcome.SUCCEEDED, detail={"reused": True})
    if existing["status"] == REJECTED:
        return Answer(c.PAYMENT_REJECTED, Outcome.REJECTED, c.INSUFFICIENT_FUNDS)
    return Answer(c.COMMAND_FAILED, Outcome.FAILED, "authorization already voided for this saga")
