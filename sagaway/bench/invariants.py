"""The order saga's invariants (SPEC.md, "The order saga"), checked in the database.

They hold whenever every saga has ended ``COMPLETED`` or ``COMPENSATED``, after any mix of
faults, restarts and retries. ``sagaway bench`` checks them after its run, and the e2e
tests after theirs. A database may hold other runs' orders, so a check is scoped to
the SKUs and customers one run used: its orders are those of its customers or holding
one of its SKUs.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.tables import sagas
from sagaway.services.inventory.tables import reservations, stock
from sagaway.services.notification.tables import notifications
from sagaway.services.orders.tables import orders
from sagaway.services.payment.tables import authorizations, customers

SETTLED = {"COMPLETED", "COMPENSATED"}
# What a settled saga leaves behind, per participant (anything else is an effect that
# was applied although the saga gave up on it, or undone although it completed).
EXPECTED_EFFECTS = {
    "COMPLETED": ("APPROVED", "RESERVED", "AUTHORIZED", {"order_approved"}),
    "COMPENSATED": ("REJECTED", None, None, {"order_rejected"}),
}


async def find_problems(
    sessions: async_sessionmaker[AsyncSession],
    *,
    stock_totals: Mapping[str, int],
    customers_used: Collection[str],
) -> list[str]:
    """Every broken invariant for the given SKUs and customers (empty when all hold).

    Args:
        sessions: Sessions on the database the system under test uses.
        stock_totals: Per SKU the run stocked, the ``available`` its admin PUT set
            (with nothing reserved at the time), i.e. what ``available + reserved``
            must still add up to.
        customers_used: The customers whose orders the run placed.
    """
    async with sessions() as session, session.begin():
        # One snapshot for every query, so the figures compared are of one moment.
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        return await _problems(session, stock_totals, customers_used)


async def _problems(
    session: AsyncSession, stock_totals: Mapping[str, int], customers_used: Collection[str]
) -> list[str]:
    problems: list[str] = []
    scope: list[ColumnElement[bool]] = [orders.c.customer_id.in_(list(customers_used))]
    scope += [orders.c["items"].contains([{"sku": sku}]) for sku in stock_totals]
    order_rows = list((await session.execute(select(orders).where(or_(*scope)))).all())
    order_ids = [o.id for o in order_rows]

    saga_rows = list(
        (
            await session.execute(
                select(sagas.c.id, sagas.c.order_id, sagas.c.status).where(
                    sagas.c.order_id.in_(order_ids)
                )
            )
        ).all()
    )
    sagas_of: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for s in saga_rows:
        sagas_of[s.order_id].append(s)
    for o in order_rows:
        found = sagas_of[o.id]
        if [s.id for s in found] != [o.saga_id]:
            problems.append(f"order {o.id} has sagas {[str(s.id) for s in found]}, not one")
        for s in found:
            if s.status not in SETTLED:
                problems.append(f"saga {s.id} is {s.status}: every saga must have settled")
            elif o.status != EXPECTED_EFFECTS[s.status][0]:
                problems.append(f"saga {s.id} is {s.status} but its order is {o.status}")

    # Per SKU: reserved = units in APPROVED orders; available + reserved = what was set.
    approved = [o for o in order_rows if o.status == "APPROVED"]
    units: Counter[str] = Counter()
    for o in approved:
        for line in o.items:
            units[line["sku"]] += line["quantity"]
    levels = {
        r.sku: r
        for r in await session.execute(
            select(stock.c.sku, stock.c.available, stock.c.reserved).where(
                stock.c.sku.in_(list(stock_totals))
            )
        )
    }
    for sku, total in stock_totals.items():
        level = levels.get(sku)
        if level is None:
            problems.append(f"sku {sku} has no stock row")
            continue
        if level.reserved != units[sku]:
            problems.append(f"sku {sku}: reserved {level.reserved}, approved units {units[sku]}")
        if level.available + level.reserved != total:
            problems.append(
                f"sku {sku}: available {level.available} + reserved {level.reserved}"
                f" != {total} set by the admin"
            )

    # Per customer: authorized = sum of the totals of its APPROVED orders.
    owed: Counter[str] = Counter()
    for o in approved:
        owed[o.customer_id] += o.total_cents
    authorized = {
        r.customer_id: r.authorized_cents
        for r in await session.execute(
            select(customers.c.customer_id, customers.c.authorized_cents).where(
                customers.c.customer_id.in_(list(customers_used))
            )
        )
    }
    for customer in customers_used:
        got = authorized.get(customer, 0)
        if got != owed[customer]:
            problems.append(
                f"customer {customer}: authorized {got}, approved totals {owed[customer]}"
            )

    problems += await _effects_once(session, order_rows, saga_rows)
    return problems


async def _effects_once(
    session: AsyncSession, order_rows: list[Any], saga_rows: list[Any]
) -> list[str]:
    """No effect applied twice: at most one reservation and one authorization per saga,
    one notification per saga and template, and each in the state its saga implies."""
    problems: list[str] = []
    saga_ids = [s.id for s in saga_rows]
    for table, name in ((reservations, "reservations"), (authorizations, "authorizations")):
        doubled = (
            await session.execute(
                select(table.c.saga_id, func.count())
                .where(table.c.saga_id.in_(saga_ids))
                .group_by(table.c.saga_id)
                .having(func.count() > 1)
            )
        ).all()
        problems += [f"saga {sid}: {n} rows in {name}" for sid, n in doubled]
    doubled_notes = (
        await session.execute(
            select(notifications.c.saga_id, notifications.c.template, func.count())
            .where(notifications.c.saga_id.in_(saga_ids))
            .group_by(notifications.c.saga_id, notifications.c.template)
            .having(func.count() > 1)
        )
    ).all()
    problems += [f"saga {sid}: {n} {tpl!r} notifications" for sid, tpl, n in doubled_notes]

    reservation = {
        r.saga_id: r
        for r in await session.execute(
            select(reservations.c.saga_id, reservations.c.status, reservations.c["items"]).where(
                reservations.c.saga_id.in_(saga_ids)
            )
        )
    }
    authorization = {
        a.saga_id: a
        for a in await session.execute(
            select(
                authorizations.c.saga_id, authorizations.c.status, authorizations.c.amount_cents
            ).where(authorizations.c.saga_id.in_(saga_ids))
        )
    }
    templates: dict[uuid.UUID, set[str]] = defaultdict(set)
    for sid, tpl in await session.execute(
        select(notifications.c.saga_id, notifications.c.template).where(
            notifications.c.saga_id.in_(saga_ids)
        )
    ):
        templates[sid].add(tpl)

    order_of = {o.id: o for o in order_rows}
    for s in saga_rows:
        if s.status not in SETTLED:
            continue
        _, held, charged, told = EXPECTED_EFFECTS[s.status]
        order = order_of[s.order_id]
        r, a = reservation.get(s.id), authorization.get(s.id)
        if held is not None:
            wanted = Counter[str]()
            for line in order.items:
                wanted[line["sku"]] += line["quantity"]
            if r is None or r.status != held or r.items != dict(wanted):
                problems.append(f"saga {s.id} {s.status}: reservation {r and tuple(r)}")
        elif r is not None and r.status == "RESERVED":
            problems.append(f"saga {s.id} {s.status}: stock still reserved")
        if charged is not None:
            if a is None or a.status != charged or a.amount_cents != order.total_cents:
                problems.append(f"saga {s.id} {s.status}: authorization {a and tuple(a)}")
        elif a is not None and a.status == "AUTHORIZED":
            problems.append(f"saga {s.id} {s.status}: payment still authorized")
        if templates[s.id] != told:
            problems.append(f"saga {s.id} {s.status}: notifications {sorted(templates[s.id])}")
    return problems
