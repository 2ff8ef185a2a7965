"""The peer's HTTP surface: what ``sagaway bench`` uses of sagaway's API, on DBOS.

``POST /orders`` commits the PENDING order, then starts its ``order_fulfillment``
workflow with the order's id as the workflow id: DBOS writes the workflow's status row
(with its input) before ``DBOS.start_workflow_async`` (or ``start_workflow``) returns,
so both are durable before the 202. The two are two commits, not one: the order row
lives in the application database and the workflow in the system database. A retry with
the same ``Idempotency-Key`` starts the same workflow id again, which DBOS turns into a
no-op, so a client that retries closes the gap; :func:`start_orphans` closes it for the
rest when the peer starts.

``GET /sagas/{id}?wait_s=N`` waits on the workflow's own handle (``get_result``), so a
waiting client costs no database query; a workflow this process did not start is read
once from DBOS's status table, and only waited on through DBOS's polling handle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any

from dbos import DBOS, SetWorkflowID, WorkflowHandle, WorkflowHandleAsync
from fastapi import FastAPI, Header, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.bench_peer.dbos_saga import COMPENSATED, COMPLETED, OrderSaga, PeerOutcome
from sagaway.bench_peer.placing import (
    IdempotencyKeyReused,
    order_data,
    place_order,
    set_available,
    set_credit_limit,
)
from sagaway.bench_peer.rules import OrderData
from sagaway.bench_peer.tables import orders
from sagaway.services.api.schemas import OrderRequest

FAILED = "FAILED"
RUNNING = "RUNNING"
# DBOS's terminal workflow statuses other than SUCCESS: the saga could not be done.
_DBOS_FAILED = frozenset({"ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})
TRACKED_SAGAS = 200_000
# Only for a workflow this process did not start (after a restart): DBOS polls for it.
UNTRACKED_POLL_S = 0.1

# Makes the future of a started workflow's outcome, when the tracker wants one.
OutcomeFactory = Callable[[], "asyncio.Future[PeerOutcome]"]


class StockBody(BaseModel):
    """``PUT /admin/inventory/{sku}``."""

    model_config = ConfigDict(extra="forbid")
    available: Annotated[StrictInt, Field(ge=0)]


class CreditBody(BaseModel):
    """``PUT /admin/customers/{customer_id}``."""

    model_config = ConfigDict(extra="forbid")
    credit_limit_cents: Annotated[StrictInt, Field(ge=0)]


class SagaTracker:
    """The outcome of each workflow this process started, as a future its waiters share.

    Bounded: past :data:`TRACKED_SAGAS` the oldest entries are forgotten, and a later
    question about one of them is answered from DBOS's status table.
    """

    def __init__(self, *, limit: int = TRACKED_SAGAS) -> None:
        self._limit = limit
        self._outcomes: OrderedDict[str, asyncio.Future[PeerOutcome]] = OrderedDict()

    def track(self, saga_id: str, outcome: OutcomeFactory) -> None:
        """Remember the workflow's outcome-to-be, unless it is already remembered."""
        if saga_id in self._outcomes:
            return
        self._outcomes[saga_id] = outcome()
        while len(self._outcomes) > self._limit:
            _, oldest = self._outcomes.popitem(last=False)
            oldest.cancel()

    async def status(self, saga_id: str, wait_s: float) -> tuple[str, str | None] | None:
        """The saga's status and rejection reason, waiting up to ``wait_s`` for its end.

        Returns:
            ``(status, reason)``, or None when DBOS has no such workflow.
        """
        outcome = self._outcomes.get(saga_id)
        if outcome is None:
            return await _untracked_status(saga_id, wait_s)
        if not outcome.done() and wait_s > 0:
            await asyncio.wait({outcome}, timeout=wait_s)  # never cancels the shared future
        if not outcome.done():
            return RUNNING, None
        if outcome.cancelled() or outcome.exception() is not None:
            return FAILED, None
        return _from_outcome(outcome.result())

    def close(self) -> None:
        """Stop waiting for outcomes (the server is stopping)."""
        for outcome in self._outcomes.values():
            outcome.cancel()


def create_app(
    *, sessions: async_sessionmaker[AsyncSession], saga: OrderSaga, tracker: SagaTracker
) -> FastAPI:
    """The peer's FastAPI application.

    Args:
        sessions: Sessions on the application database.
        saga: The registered ``order_fulfillment`` workflow.
        tracker: Where started workflows are waited on.
    """
    app = FastAPI(title="sagaway bench peer (DBOS Transact)", docs_url=None, redoc_url=None)

    async def start(order: OrderData) -> None:
        tracker.track(str(order.order_id), await start_saga(saga, order))

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/orders", status_code=202)
    async def post_order(
        request: OrderRequest,
        response: Response,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)
        ] = None,
    ) -> dict[str, Any]:
        try:
            async with sessions.begin() as session:
                placed = await place_order(session, request, idempotency_key=idempotency_key)
        except IdempotencyKeyReused as exc:
            raise HTTPException(409, "Idempotency-Key was used with another body") from exc
        await start(placed.order)
        order_id = str(placed.order.order_id)
        response.headers["Location"] = f"/sagas/{order_id}"
        return {"order_id": order_id, "saga_id": order_id, "status": "PENDING"}

    @app.get("/sagas/{saga_id}")
    async def get_saga(
        saga_id: uuid.UUID, wait_s: Annotated[float, Query(ge=0, le=30)] = 0
    ) -> dict[str, Any]:
        found = await tracker.status(str(saga_id), wait_s)
        if found is None:
            raise HTTPException(404, "saga not found")
        status, reason = found
        return {
            "saga_id": str(saga_id),
            "saga_type": "order_fulfillment",
            "order_id": str(saga_id),
            "status": status,
            "failure_reason": reason,
        }

    # The bench sends its admin token; the peer accepts any Authorization header.
    @app.put("/admin/inventory/{sku}")
    async def put_inventory(sku: str, body: StockBody) -> dict[str, Any]:
        async with sessions.begin() as session:
            return await set_available(session, sku, body.available)

    @app.put("/admin/customers/{customer_id}")
    async def put_customer(customer_id: str, body: CreditBody) -> dict[str, Any]:
        async with sessions.begin() as session:
            return await set_credit_limit(session, customer_id, body.credit_limit_cents)

    return app


async def start_orphans(
    sessions: async_sessionmaker[AsyncSession], saga: OrderSaga, tracker: SagaTracker
) -> int:
    """Start the workflow of every PENDING order that has none (a crash after its commit).

    Returns:
        How many workflows were started.
    """
    async with sessions() as session:
        pending = (await session.execute(select(orders).where(orders.c.status == "PENDING"))).all()
    started = 0
    for row in pending:
        if await DBOS.get_workflow_status_async(str(row.id)) is not None:
            continue
        order = order_data(row.id, row.customer_id, row.items)
        tracker.track(str(row.id), await start_saga(saga, order))
        started += 1
    return started


async def _untracked_status(saga_id: str, wait_s: float) -> tuple[str, str | None] | None:
    status = await DBOS.get_workflow_status_async(saga_id)
    if status is None:
        return None
    if status.status == "SUCCESS" and isinstance(status.output, PeerOutcome):
        return _from_outcome(status.output)
    if status.status in _DBOS_FAILED:
        return FAILED, None
    if wait_s <= 0:
        return RUNNING, None
    handle: WorkflowHandleAsync[PeerOutcome] = await DBOS.retrieve_workflow_async(saga_id)
    try:
        outcome = await asyncio.wait_for(
            handle.get_result(polling_interval_sec=UNTRACKED_POLL_S), timeout=wait_s
        )
    except TimeoutError:
        return RUNNING, None
    except Exception:
        return FAILED, None
    return _from_outcome(outcome)


async def start_saga(saga: OrderSaga, order: OrderData) -> OutcomeFactory:
    """Start the order's workflow, its id the order's; DBOS has recorded it on return.

    Returns:
        What makes the future of the workflow's outcome, should it be wanted.
    """
    if saga.style == "async":
        with SetWorkflowID(str(order.order_id)):
            handle = await DBOS.start_workflow_async(saga.workflow, order)
        return lambda: asyncio.ensure_future(handle.get_result())
    sync_handle = await asyncio.to_thread(_start_sync, saga, order)
    return lambda: _sync_outcome(sync_handle)


def _start_sync(saga: OrderSaga, order: OrderData) -> WorkflowHandle[PeerOutcome]:
    with SetWorkflowID(str(order.order_id)):
        return DBOS.start_workflow(saga.workflow, order)


def _sync_outcome(handle: WorkflowHandle[PeerOutcome]) -> asyncio.Future[PeerOutcome]:
    # A synchronous workflow started here runs on DBOS's executor, and its handle holds
    # that execution's future: waiting on it needs neither a thread nor a query.
    future = getattr(handle, "future", None)
    if isinstance(future, concurrent.futures.Future):
        return asyncio.wrap_future(future)
    return asyncio.ensure_future(asyncio.to_thread(handle.get_result))


def _from_outcome(outcome: PeerOutcome) -> tuple[str, str | None]:
    if outcome.status in (COMPLETED, COMPENSATED):
        return outcome.status, outcome.reason
    return FAILED, outcome.reason
