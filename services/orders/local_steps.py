"""The order saga's local actions, run by the orchestrator in the saga's transaction."""

from __future__ import annotations

import uuid

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.coordinator import LocalHandler, LocalResult, SagaContext
from sagaway.orchestrator.state import Outcome
from sagaway.services.orders.tables import orders

APPROVE = "orders.approve"
REJECT = "orders.reject"


async def approve(session: AsyncSession, saga: SagaContext) -> LocalResult:
    """The order becomes APPROVED; its reservation and authorization stay allocated."""
    await _set_status(session, saga, "APPROVED", None)
    return LocalResult(Outcome.SUCCEEDED)


async def reject(session: AsyncSession, saga: SagaContext) -> LocalResult:
    """The order becomes REJECTED with the reason the saga compensated for."""
    await _set_status(session, saga, "REJECTED", saga.rejection_reason or "rejected")
    return LocalResult(Outcome.SUCCEEDED)


async def _set_status(
    session: AsyncSession, saga: SagaContext, status: str, reason: str | None
) -> None:
    await session.execute(
        update(orders)
        .where(orders.c.id == uuid.UUID(str(saga.data["order_id"])))
        .values(status=status, rejection_reason=reason, updated_at=func.now())
    )


HANDLERS: dict[str, LocalHandler] = {APPROVE: approve, REJECT: reject}
