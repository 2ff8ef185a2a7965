"""``/admin/*``: stock and credit, behind the admin bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from sagaway.services.api.dependencies import AdminDep, SessionDep
from sagaway.services.api.responses import (
    BODY_ERRORS,
    UNAUTHORIZED,
    UNAVAILABLE,
    invalid,
    problem,
)
from sagaway.services.api.schemas import (
    CustomerUpdate,
    CustomerView,
    InventoryUpdate,
    InventoryView,
)
from sagaway.services.contracts import SKU_PATTERN
from sagaway.services.inventory import stock
from sagaway.services.ops.audit import record_action
from sagaway.services.payment import credit

router = APIRouter(prefix="/admin", tags=["admin"], responses={401: UNAUTHORIZED, 503: UNAVAILABLE})

Sku = Annotated[str, Path(pattern=SKU_PATTERN)]
CustomerId = Annotated[str, Path(min_length=1, max_length=64)]


@router.put(
    "/inventory/{sku}",
    response_model=InventoryView,
    responses={**BODY_ERRORS, 422: invalid("Bad SKU or stock level")},
)
async def put_inventory(
    sku: Sku, body: InventoryUpdate, session: SessionDep, _: AdminDep
) -> InventoryView:
    """Set the stock free to reserve; reservations are kept."""
    async with session.begin():
        level = await stock.set_available(session, sku, body.available)
    return InventoryView(sku=level.sku, available=level.available, reserved=level.reserved)


@router.get(
    "/inventory/{sku}",
    response_model=InventoryView,
    responses={404: problem("Unknown SKU", "sku not found"), 422: invalid("Bad SKU")},
)
async def get_inventory(sku: Sku, session: SessionDep, _: AdminDep) -> InventoryView:
    """Free and reserved units of a SKU."""
    level = await stock.get_level(session, sku)
    if level is None:
        raise HTTPException(status_code=404, detail="sku not found")
    return InventoryView(sku=level.sku, available=level.available, reserved=level.reserved)


@router.put(
    "/customers/{customer_id}",
    response_model=CustomerView,
    responses={**BODY_ERRORS, 422: invalid("Bad customer id or credit limit")},
)
async def put_customer(
    customer_id: CustomerId, body: CustomerUpdate, session: SessionDep, actor: AdminDep
) -> CustomerView:
    """Set a customer's credit limit; authorizations are kept."""
    async with session.begin():
        c = await credit.set_limit(session, customer_id, body.credit_limit_cents)
        await record_action(
            session,
            actor=actor,
            action="customer.set_credit_limit",
            target=customer_id,
            detail=str(body.credit_limit_cents),
        )
    return CustomerView(
        customer_id=c.customer_id,
        credit_limit_cents=c.credit_limit_cents,
        authorized_cents=c.authorized_cents,
    )


@router.get(
    "/customers/{customer_id}",
    response_model=CustomerView,
    responses={
        404: problem("Unknown customer", "customer not found"),
        422: invalid("Bad customer id"),
    },
)
async def get_customer(customer_id: CustomerId, session: SessionDep, _: AdminDep) -> CustomerView:
    """A customer's credit limit and what is authorized against it."""
    c = await credit.get_credit(session, customer_id)
    if c is None:
        raise HTTPException(status_code=404, detail="customer not found")
    return CustomerView(
        customer_id=c.customer_id,
        credit_limit_cents=c.credit_limit_cents,
        authorized_cents=c.authorized_cents,
    )
