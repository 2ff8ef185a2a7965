"""The order saga's business rules on the peer's tables, as sagaway's participants apply them.

Each function runs inside a transaction it is handed (a DBOS datasource transaction, or
a plain one a step opened) and commits nothing itself. They are synchronous, so that one
text serves DBOS's synchronous workflows and, through ``AsyncSession.run_sync``, its
asynchronous ones. The rules are sagaway's: reserve
every line or none (``out_of_stock``); authorize the total against the remaining credit
(``insufficient_funds``; a customer never seen gets :data:`DEFAULT_CREDIT_LIMIT_CENTS`);
the order is approved after both; a rejection compensates in reverse, rejects the order
and notifies the customer. A compensation is idempotent: it leaves a tombstone row. The
authorization is never voided: the only step after it is the pivot, which has no
business reason to fail (a technical failure there ends the saga FAILED, for an
operator, as in sagaway).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from sagaway.bench_peer.tables import (
    authorizations,
    customers,
    notifications,
    orders,
    reservations,
    stock,
)

DEFAULT_CREDIT_LIMIT_CENTS = 100_000
OUT_OF_STOCK = "out_of_stock"
INSUFFICIENT_FUNDS = "insufficient_funds"
APPROVED_TEMPLATE = "order_approved"
REJECTED_TEMPLATE = "order_rejected"

_TEXTS = {
    APPROVED_TEMPLATE: "Your order {order_id} is approved.",
    REJECTED_TEMPLATE: "Your order {order_id} could not be completed ({reason}).",
}


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line of an order."""

    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class OrderData:
    """What the saga needs of its order: the workflow's input."""

    order_id: uuid.UUID
    customer_id: str
    lines: tuple[OrderLine, ...]
    total_cents: int


def reserve_inventory(session: Session, order: OrderData) -> str | None:
    """Reserve every line, or nothing; the rejection reason, or None when reserved."""
    wanted = Counter[str]()
    for line in order.lines:
        wanted[line.sku] += line.quantity
    claimed = (
        session.execute(
            insert(reservations)
            .values(order_id=order.order_id, items=dict(wanted), status="RESERVED")
            .on_conflict_do_nothing(index_elements=[reservations.c.order_id])
            .returning(reservations.c.order_id)
        )
    ).first()
    if claimed is None:
        # A step run again after its effect was committed: answer as the first run did.
        status = (
            session.execute(
                select(reservations.c.status).where(reservations.c.order_id == order.order_id)
            )
        ).scalar_one()
        return None if status == "RESERVED" else OUT_OF_STOCK
    # Lock the SKUs in a fixed order so that two orders for the same SKUs cannot deadlock.
    rows = (
        session.execute(
            select(stock.c.sku, stock.c.available)
            .where(stock.c.sku.in_(sorted(wanted)))
            .order_by(stock.c.sku)
            .with_for_update()
        )
    ).all()
    available = {row.sku: row.available for row in rows}
    if any(available.get(sku, 0) < qty for sku, qty in wanted.items()):
        _set_reservation(session, order.order_id, "REJECTED")
        return OUT_OF_STOCK
    for sku, qty in sorted(wanted.items()):
        session.execute(
            update(stock)
            .where(stock.c.sku == sku)
            .values(available=stock.c.available - qty, reserved=stock.c.reserved + qty)
        )
    return None


def release_inventory(session: Session, order: OrderData) -> None:
    """Give the order's reserved units back (compensation of ``reserve_inventory``)."""
    row = (
        session.execute(
            select(reservations.c.status, reservations.c["items"])
            .where(reservations.c.order_id == order.order_id)
            .with_for_update()
        )
    ).first()
    if row is None or row.status != "RESERVED":
        return
    for sku, qty in sorted(row.items.items()):
        session.execute(
            update(stock)
            .where(stock.c.sku == sku)
            .values(available=stock.c.available + qty, reserved=stock.c.reserved - qty)
        )
    _set_reservation(session, order.order_id, "RELEASED")


def authorize_payment(session: Session, order: OrderData) -> str | None:
    """Authorize the total against the remaining credit; the rejection reason, or None."""
    claimed = (
        session.execute(
            insert(authorizations)
            .values(
                order_id=order.order_id,
                customer_id=order.customer_id,
                amount_cents=order.total_cents,
                status="AUTHORIZED",
            )
            .on_conflict_do_nothing(index_elements=[authorizations.c.order_id])
            .returning(authorizations.c.order_id)
        )
    ).first()
    if claimed is None:
        status = (
            session.execute(
                select(authorizations.c.status).where(authorizations.c.order_id == order.order_id)
            )
        ).scalar_one()
        return None if status == "AUTHORIZED" else INSUFFICIENT_FUNDS
    session.execute(
        insert(customers)
        .values(
            customer_id=order.customer_id,
            credit_limit_cents=DEFAULT_CREDIT_LIMIT_CENTS,
            authorized_cents=0,
        )
        .on_conflict_do_nothing(index_elements=[customers.c.customer_id])
    )
    customer = (
        session.execute(
            select(customers.c.credit_limit_cents, customers.c.authorized_cents)
            .where(customers.c.customer_id == order.customer_id)
            .with_for_update()
        )
    ).one()
    if customer.credit_limit_cents - customer.authorized_cents < order.total_cents:
        _set_authorization(session, order.order_id, "REJECTED")
        return INSUFFICIENT_FUNDS
    session.execute(
        update(customers)
        .where(customers.c.customer_id == order.customer_id)
        .values(authorized_cents=customers.c.authorized_cents + order.total_cents)
    )
    return None


def approve_order(session: Session, order: OrderData) -> None:
    """The pivot: the order becomes APPROVED; its reservation stays allocated to it."""
    _set_order(session, order.order_id, "APPROVED", None)


def reject_order(session: Session, order: OrderData, reason: str) -> None:
    """The order becomes REJECTED with the reason the saga compensated for."""
    _set_order(session, order.order_id, "REJECTED", reason)


def notify_customer(session: Session, order: OrderData, template: str, reason: str | None) -> None:
    """Record the customer's message, once per order and template."""
    session.execute(
        insert(notifications)
        .values(
            order_id=order.order_id,
            customer_id=order.customer_id,
            template=template,
            text=_TEXTS[template].format(order_id=order.order_id, reason=reason),
        )
        .on_conflict_do_nothing(constraint="uq_notifications_order_template")
    )


def _set_reservation(session: Session, order_id: uuid.UUID, status: str) -> None:
    session.execute(
        update(reservations).where(reservations.c.order_id == order_id).values(status=status)
    )


def _set_authorization(session: Session, order_id: uuid.UUID, status: str) -> None:
    session.execute(
        update(authorizations).where(authorizations.c.order_id == order_id).values(status=status)
    )


def _set_order(session: Session, order_id: uuid.UUID, status: str, reason: str | None) -> None:
    session.execute(
        update(orders)
        .where(orders.c.id == order_id)
        .values(status=status, rejection_reason=reason, updated_at=func.now())
    )
