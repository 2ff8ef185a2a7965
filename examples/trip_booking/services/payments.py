"""Payments: charge the traveler's card (card ``DECLINED``: ``card_declined``).

The charge is the saga's pivot, so it has no compensation here; a refund would be a
business process of its own.
"""

from __future__ import annotations

import sagaway
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Uuid, func
from sqlalchemy.ext.asyncio import AsyncSession

from trips.contracts import ChargeCard

DECLINED = "DECLINED"

# One row per saga: a redelivered or retried ChargeCard never charges twice.
charges = Table(
    "charges",
    MetaData(schema="payments"),
    Column("saga_id", Uuid, primary_key=True),
    Column("booking_id", Uuid, nullable=False),
    Column("charge_ref", String(32)),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

payments = sagaway.Participant("payments", description="Charges the traveler's card.")


@payments.handles(ChargeCard)
async def charge(
    session: AsyncSession, command: ChargeCard, ctx: sagaway.CommandContext
) -> sagaway.Reply:
    """Charge the card once per saga and answer the charge's reference."""
    ref = f"CH-{ctx.saga_id.hex[:8].upper()}"
    declined = command.card == DECLINED
    existing = await sagaway.claim_for_saga(
        session,
        charges,
        ctx.saga_id,
        {
            "booking_id": command.booking_id,
            "charge_ref": None if declined else ref,
            "amount_cents": command.amount_cents,
            "currency": command.currency,
            "status": "DECLINED" if declined else "CHARGED",
        },
    )
    status = existing["status"] if existing is not None else ("DECLINED" if declined else "CHARGED")
    if status == "CHARGED":
        return sagaway.Succeeded(output={"charge_ref": ref})
    return sagaway.Rejected("card_declined")
