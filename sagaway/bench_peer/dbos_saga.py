"""The order saga as a DBOS Transact workflow, in either of the two ways DBOS offers.

``transactions``: every step is a datasource transaction (``@ds.transaction``, DBOS 3's
form of the ``@DBOS.transaction`` of earlier releases): the step's effect and DBOS's
record of its result commit in one transaction of the application database, so a step
is applied exactly once, which is the guarantee sagaway's inbox gives its participants.

``steps``: every step is a plain ``@DBOS.step`` that opens its own transaction; DBOS
records the result afterwards in the system database, so a crash between the two runs
the step again (at least once). The rules are written to be idempotent either way.

Importing this module imports DBOS; only the peer server does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from dbos import DBOS, AsyncSQLAlchemyDatasource
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.bench_peer import rules
from sagaway.bench_peer.rules import OrderData
from sagaway.bench_peer.tuning import IsolationLevel, Mode

WORKFLOW_NAME = "order_fulfillment"
COMPLETED = "COMPLETED"
COMPENSATED = "COMPENSATED"

# A plain step retries a technical failure as sagaway retries a step: 5 attempts, the
# first retry after 1 s, doubling (SAGAWAY_STEP_MAX_ATTEMPTS / SAGAWAY_STEP_BACKOFF_S).
STEP_MAX_ATTEMPTS = 5
STEP_BACKOFF_S = 1.0

P = ParamSpec("P")
R = TypeVar("R")
OrderSaga = Callable[[OrderData], Coroutine[Any, Any, "SagaOutcome"]]


@dataclass(frozen=True, slots=True)
class SagaOutcome:
    """The workflow's result: how the saga ended and, when rejected, why."""

    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Steps:
    reserve_inventory: Callable[[OrderData], Awaitable[str | None]]
    release_inventory: Callable[[OrderData], Awaitable[None]]
    authorize_payment: Callable[[OrderData], Awaitable[str | None]]
    void_payment: Callable[[OrderData], Awaitable[None]]
    approve_order: Callable[[OrderData], Awaitable[None]]
    reject_order: Callable[[OrderData, str], Awaitable[None]]
    notify_customer: Callable[[OrderData, str, str | None], Awaitable[None]]


def build_order_saga(
    *,
    mode: Mode,
    datasource: AsyncSQLAlchemyDatasource | None,
    sessions: async_sessionmaker[AsyncSession],
    isolation_level: IsolationLevel,
) -> OrderSaga:
    """Register the ``order_fulfillment`` workflow and its steps with DBOS.

    Call once per process, before ``DBOS.launch()`` (DBOS recovers only registered
    workflows).

    Args:
        mode: ``transactions`` (datasource transactions) or ``steps`` (plain steps).
        datasource: The application database's datasource; required for ``transactions``.
        sessions: Sessions on the application database, for plain steps.
        isolation_level: Isolation of each datasource transaction.

    Returns:
        The workflow function, to start with ``DBOS.start_workflow_async``.
    """
    if mode == "transactions":
        if datasource is None:
            raise ValueError("mode 'transactions' needs the application datasource")
        ds = datasource

        def wrap(name: str, body: Callable[Concatenate[AsyncSession, P], Awaitable[R]]) -> Any:
            return _as_transaction(ds, name, body, isolation_level)
    else:

        def wrap(name: str, body: Callable[Concatenate[AsyncSession, P], Awaitable[R]]) -> Any:
            return _as_plain_step(sessions, name, body)

    steps = _Steps(
        reserve_inventory=wrap("reserve_inventory", rules.reserve_inventory),
        release_inventory=wrap("release_inventory", rules.release_inventory),
        authorize_payment=wrap("authorize_payment", rules.authorize_payment),
        void_payment=wrap("void_payment", rules.void_payment),
        approve_order=wrap("approve_order", rules.approve_order),
        reject_order=wrap("reject_order", rules.reject_order),
        notify_customer=wrap("notify_customer", rules.notify_customer),
    )

    @DBOS.workflow(name=WORKFLOW_NAME)
    async def order_fulfillment(order: OrderData) -> SagaOutcome:
        reason = await steps.reserve_inventory(order)
        if reason is None:
            reason = await steps.authorize_payment(order)
            if reason is not None:
                await steps.release_inventory(order)
        if reason is not None:
            # A business rejection: completed steps were compensated in reverse order.
            await steps.reject_order(order, reason)
            await steps.notify_customer(order, rules.REJECTED_TEMPLATE, reason)
            return SagaOutcome(COMPENSATED, reason)
        await steps.approve_order(order)  # the pivot: nothing is compensated after it
        await steps.notify_customer(order, rules.APPROVED_TEMPLATE, None)
        return SagaOutcome(COMPLETED)

    return order_fulfillment


def _as_transaction(
    ds: AsyncSQLAlchemyDatasource,
    name: str,
    body: Callable[Concatenate[AsyncSession, P], Awaitable[R]],
    isolation_level: IsolationLevel,
) -> Callable[P, Coroutine[Any, Any, R]]:
    async def step(*args: P.args, **kwargs: P.kwargs) -> R:
        return await body(ds.sql_session(), *args, **kwargs)

    step.__name__ = step.__qualname__ = name
    return ds.transaction(name=name, isolation_level=isolation_level)(step)


def _as_plain_step(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    body: Callable[Concatenate[AsyncSession, P], Awaitable[R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    async def step(*args: P.args, **kwargs: P.kwargs) -> R:
        async with sessions.begin() as session:
            return await body(session, *args, **kwargs)

    step.__name__ = step.__qualname__ = name
    decorate = DBOS.step(
        name=name,
        retries_allowed=True,
        max_attempts=STEP_MAX_ATTEMPTS,
        interval_seconds=STEP_BACKOFF_S,
        backoff_rate=2.0,
    )
    return decorate(step)
