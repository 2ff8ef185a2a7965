"""The order saga as a DBOS Transact workflow, in each of the ways DBOS offers.

``transactions``: every step is a datasource transaction (``@ds.transaction``, DBOS 3's
form of the ``@DBOS.transaction`` of earlier releases): the step's effect and DBOS's
record of its result commit in one transaction of the application database, so a step
is applied exactly once, which is the guarantee sagaway's inbox gives its participants.

``steps``: every step is a plain ``@DBOS.step`` that opens its own transaction; DBOS
records the result afterwards in the system database, so a crash between the two runs
the step again (at least once). The rules are written to be idempotent either way.

Each mode comes in DBOS's two styles: ``async def`` workflows and steps, run on the
server's event loop (DBOS hands each system-database call to a thread), or plain
functions, which DBOS runs on its executor threads. The rules are the same text in all
four (:mod:`sagaway.bench_peer.rules`).

Importing this module imports DBOS; only the peer server does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from dbos import DBOS, AsyncSQLAlchemyDatasource, SQLAlchemyDatasource
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from sagaway.bench_peer import rules
from sagaway.bench_peer.rules import OrderData
from sagaway.bench_peer.tuning import IsolationLevel, Mode, Style

WORKFLOW_NAME = "order_fulfillment"
COMPLETED = "COMPLETED"
COMPENSATED = "COMPENSATED"

# A plain step retries a technical failure as sagaway retries a step: 5 attempts, the
# first retry after 1 s, doubling (SAGAWAY_STEP_MAX_ATTEMPTS / SAGAWAY_STEP_BACKOFF_S).
STEP_MAX_ATTEMPTS = 5
STEP_BACKOFF_S = 1.0

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
Rule = Callable[Concatenate[Session, P], R]


@dataclass(frozen=True, slots=True)
class PeerOutcome:
    """The workflow's result: how the saga ended and, when rejected, why."""

    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StepWriters:
    """What the steps write with; which ones are needed depends on mode and style.

    Attributes:
        async_datasource: ``transactions`` in the ``async`` style.
        sync_datasource: ``transactions`` in the ``sync`` style.
        async_sessions: ``steps`` in the ``async`` style.
        sync_sessions: ``steps`` in the ``sync`` style.
    """

    async_datasource: AsyncSQLAlchemyDatasource | None = None
    sync_datasource: SQLAlchemyDatasource | None = None
    async_sessions: async_sessionmaker[AsyncSession] | None = None
    sync_sessions: sessionmaker[Session] | None = None


@dataclass(frozen=True, slots=True)
class OrderSaga:
    """The registered ``order_fulfillment`` workflow.

    Attributes:
        style: ``async``: start it with ``DBOS.start_workflow_async``; ``sync``: with
            ``DBOS.start_workflow``.
        workflow: The workflow function.
    """

    style: Style
    workflow: Callable[[OrderData], Any]


def build_order_saga(
    *, mode: Mode, style: Style, writers: StepWriters, isolation_level: IsolationLevel
) -> OrderSaga:
    """Register the ``order_fulfillment`` workflow and its steps with DBOS.

    Call once per process, before ``DBOS.launch()`` (DBOS recovers only registered
    workflows).

    Args:
        mode: ``transactions`` (datasource transactions) or ``steps`` (plain steps).
        style: ``async`` or ``sync`` workflow and step functions.
        writers: What the steps write with.
        isolation_level: Isolation of each datasource transaction.

    Raises:
        ValueError: ``writers`` lacks what ``mode`` and ``style`` need.
    """
    if style == "async":
        return OrderSaga("async", _async_saga(_async_wrapper(mode, writers, isolation_level)))
    return OrderSaga("sync", _sync_saga(_sync_wrapper(mode, writers, isolation_level)))


def _async_saga(step: Callable[[str, Rule[..., Any]], Any]) -> Callable[[OrderData], Any]:
    reserve_inventory = step("reserve_inventory", rules.reserve_inventory)
    release_inventory = step("release_inventory", rules.release_inventory)
    authorize_payment = step("authorize_payment", rules.authorize_payment)
    approve_order = step("approve_order", rules.approve_order)
    reject_order = step("reject_order", rules.reject_order)
    notify_customer = step("notify_customer", rules.notify_customer)

    @DBOS.workflow(name=WORKFLOW_NAME)
    async def order_fulfillment(order: OrderData) -> PeerOutcome:
        reason = await reserve_inventory(order)
        if reason is None:
            reason = await authorize_payment(order)
            if reason is not None:
                await release_inventory(order)
        if reason is not None:
            # A business rejection: the completed steps were compensated in reverse order.
            await reject_order(order, reason)
            await notify_customer(order, rules.REJECTED_TEMPLATE, reason)
            return PeerOutcome(COMPENSATED, reason)
        await approve_order(order)  # the pivot: nothing is compensated after it
        await notify_customer(order, rules.APPROVED_TEMPLATE, None)
        return PeerOutcome(COMPLETED)

    return order_fulfillment


def _sync_saga(step: Callable[[str, Rule[..., Any]], Any]) -> Callable[[OrderData], Any]:
    reserve_inventory = step("reserve_inventory", rules.reserve_inventory)
    release_inventory = step("release_inventory", rules.release_inventory)
    authorize_payment = step("authorize_payment", rules.authorize_payment)
    approve_order = step("approve_order", rules.approve_order)
    reject_order = step("reject_order", rules.reject_order)
    notify_customer = step("notify_customer", rules.notify_customer)

    # The same saga as _async_saga, step for step, without the awaits.
    @DBOS.workflow(name=WORKFLOW_NAME)
    def order_fulfillment(order: OrderData) -> PeerOutcome:
        reason = reserve_inventory(order)
        if reason is None:
            reason = authorize_payment(order)
            if reason is not None:
                release_inventory(order)
        if reason is not None:
            reject_order(order, reason)
            notify_customer(order, rules.REJECTED_TEMPLATE, reason)
            return PeerOutcome(COMPENSATED, reason)
        approve_order(order)
        notify_customer(order, rules.APPROVED_TEMPLATE, None)
        return PeerOutcome(COMPLETED)

    return order_fulfillment


def _plain_step_options(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    return DBOS.step(
        name=name,
        retries_allowed=True,
        max_attempts=STEP_MAX_ATTEMPTS,
        interval_seconds=STEP_BACKOFF_S,
        backoff_rate=2.0,
    )


def _async_wrapper(
    mode: Mode, writers: StepWriters, isolation_level: IsolationLevel
) -> Callable[[str, Rule[..., Any]], Any]:
    if mode == "transactions":
        ds = _need(writers.async_datasource, "an async datasource")

        def transaction(name: str, rule: Rule[..., Any]) -> Any:
            async def step(*args: Any) -> Any:
                return await ds.sql_session().run_sync(rule, *args)

            step.__name__ = step.__qualname__ = name
            return ds.transaction(name=name, isolation_level=isolation_level)(step)

        return transaction
    sessions = _need(writers.async_sessions, "async sessions")

    def plain(name: str, rule: Rule[..., Any]) -> Any:
        async def step(*args: Any) -> Any:
            async with sessions.begin() as session:
                return await session.run_sync(rule, *args)

        step.__name__ = step.__qualname__ = name
        return _plain_step_options(name)(step)

    return plain


def _sync_wrapper(
    mode: Mode, writers: StepWriters, isolation_level: IsolationLevel
) -> Callable[[str, Rule[..., Any]], Any]:
    if mode == "transactions":
        ds = _need(writers.sync_datasource, "a sync datasource")

        def transaction(name: str, rule: Rule[..., Any]) -> Any:
            def step(*args: Any) -> Any:
                return rule(ds.sql_session(), *args)

            step.__name__ = step.__qualname__ = name
            return ds.transaction(name=name, isolation_level=isolation_level)(step)

        return transaction
    sessions = _need(writers.sync_sessions, "sync sessions")

    def plain(name: str, rule: Rule[..., Any]) -> Any:
        def step(*args: Any) -> Any:
            with sessions.begin() as session:
                return rule(session, *args)

        step.__name__ = step.__qualname__ = name
        return _plain_step_options(name)(step)

    return plain


def _need(writer: T | None, what: str) -> T:
    if writer is None:
        raise ValueError(f"this mode and style need {what}")
    return writer
