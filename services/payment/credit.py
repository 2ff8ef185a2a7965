"""Customers' credit: what operators set and read."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.services.payment.tables import customers


@dataclass(frozen=True, slots=True)
class Credit:
    """A customer's limit and what is authorized against it."""

    customer_id: str
    credit_limit_cents: int
    authorized_cents: int


async def set_limit(session: AsyncSession, customer_id: str, limit_cents: int) -> Credit:
    """Set the customer's credit limit; existing authorizations are kept."""
    row = (
        await session.execute(
            insert(customers)
            .values(customer_id=customer_id, credit_limit_cents=limit_cents, authorized_cents=0)
            .on_conflict_do_update(
                index_elements=[customers.c.customer_id],
                set_={"credit_limit_cents": limit_cents, "updated_at": func.now()},
            )
            .returning(customers)
        )
    ).one()
    return Credit(row.customer_id, row.credit_limit_cents, row.authorized_cents)


async def get_credit(session: AsyncSession, customer_id: str) -> Credit | None:
    """The customer's credit, or None for a customer never seen."""
    row = (
        await session.execute(select(customers).where(customers.c.customer_id == customer_id))
    ).first()
    return Credit(row.customer_id, row.credit_limit_cents, row.authorized_cents) if row else None
