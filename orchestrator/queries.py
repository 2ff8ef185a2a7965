"""Read-side saga queries for operators: filtered lists, counts and recent endings.

Kept apart from the repository, which serves the coordinator's writes: these queries only
read, and each is shaped to stay on an index however many sagas are kept (see the
indexes of ``orchestrator.tables.sagas``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.state import Phase, SagaStatus
from sagaway.orchestrator.tables import CUSTOMER_ID_SQL, FINISHED_SQL, sagas

# The same SQL text as the index expression: a bound parameter in its place would keep
# the planner from matching ``ix_sagas_customer_created``.
customer_id_expr: ColumnElement[str] = literal_column(CUSTOMER_ID_SQL)

FINISHED_STATUSES = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaFilter:
    """What an operator narrows a saga list to; every field is optional.

    Attributes:
        created_from: inclusive lower bound of ``created_at``.
        created_to: exclusive upper bound of ``created_at``.
    """

    status: SagaStatus | None = None
    saga_type: str | None = None
    order_id: uuid.UUID | None = None
    customer_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class SagaSummary:
    """One line of a saga list."""

    id: uuid.UUID
    saga_type: str
    order_id: uuid.UUID | None
    customer_id: str | None
    status: str
    current_step: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FinishedCount:
    """How many sagas ended with ``status`` during the minute starting at ``minute``."""

    minute: datetime
    status: str
    count: int


async def search_sagas(
    session: AsyncSession,
    filters: SagaFilter,
    *,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[SagaSummary]:
    """Sagas matching ``filters``, newest first, strictly older than ``before``.

    Keyset pagination on ``(created_at, id)``. Each equality filter leads an index that
    continues with ``(created_at, id)`` (status, saga type, customer; order id is
    unique), so a page reads ``limit`` index entries instead of sorting the matches.
    """
    query = (
        select(
            sagas.c.id,
            sagas.c.saga_type,
            sagas.c.order_id,
            customer_id_expr.label("customer_id"),
            sagas.c.status,
            sagas.c.phase,
            sagas.c.cursor,
            sagas.c.steps,
            sagas.c.failure_reason,
            sagas.c.created_at,
            sagas.c.updated_at,
        )
        .order_by(sagas.c.created_at.desc(), sagas.c.id.desc())
        .limit(limit)
    )
    if filters.status is not None:
        query = query.where(sagas.c.status == filters.status.value)
    if filters.saga_type is not None:
        query = query.where(sagas.c.saga_type == filters.saga_type)
    if filters.order_id is not None:
        query = query.where(sagas.c.order_id == filters.order_id)
    if filters.customer_id is not None:
        query = query.where(customer_id_expr == filters.customer_id)
    if filters.created_from is not None:
        query = query.where(sagas.c.created_at >= filters.created_from)
    if filters.created_to is not None:
        query = query.where(sagas.c.created_at < filters.created_to)
    if before is not None:
        created_at, saga_id = before
        query = query.where(
            tuple_(sagas.c.created_at, sagas.c.id) < tuple_(literal(created_at), literal(saga_id))
        )
    rows = await session.execute(query)
    return [
        SagaSummary(
            id=r.id,
            saga_type=r.saga_type,
            order_id=r.order_id,
            customer_id=r.customer_id,
            status=r.status,
            current_step=_current_step(r.phase, r.cursor, r.steps),
            failure_reason=r.failure_reason,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class StatusCount:
    """How many sagas have a status; ``exact`` is False for a planner estimate."""

    status: str
    count: int
    exact: bool


async def count_by_status(session: AsyncSession, *, cap: int) -> list[StatusCount]:
    """How many sagas have each status: exact up to ``cap``, estimated beyond.

    Each exact count is an index range scan of ``ix_sagas_status_created`` stopped at
    ``cap``, so the overview costs about the same with a hundred or a hundred million
    finished sagas. A status with at least ``cap`` sagas is counted from the table's
    statistics instead (``reltuples`` times the status's frequency in ``pg_stats``, as
    fresh as the last ANALYZE), or reported as ``cap`` when there are none yet.
    """
    parts = [
        select(
            literal(status.value).label("status"),
            select(func.count())
            .select_from(
                select(literal_column("1"))
                .select_from(sagas)
                .where(sagas.c.status == status.value)
                .limit(cap)
                .subquery()
            )
            .scalar_subquery()
            .label("n"),
        )
        for status in SagaStatus
    ]
    exact = {r.status: int(r.n) for r in await session.execute(union_all(*parts))}
    if all(n < cap for n in exact.values()):
        return [StatusCount(s, n, exact=True) for s, n in exact.items()]
    estimates = await _estimated_counts(session)
    return [
        StatusCount(s, max(cap, estimates[s]), exact=False)
        if n >= cap and s in estimates
        else StatusCount(s, n, exact=n < cap)
        for s, n in exact.items()
    ]


_STATUS_ESTIMATES = text(
    """
    SELECT v.status, (c.reltuples * v.freq)::bigint AS n
      FROM pg_class AS c,
           pg_stats AS st,
           unnest(st.most_common_vals::text::text[], st.most_common_freqs) AS v(status, freq)
     WHERE c.oid = 'sagas.sagas'::regclass
       AND st.schemaname = 'sagas' AND st.tablename = 'sagas' AND st.attname = 'status'
       AND c.reltuples > 0
    """
)


async def _estimated_counts(session: AsyncSession) -> dict[str, int]:
    return {r.status: int(r.n) for r in await session.execute(_STATUS_ESTIMATES)}


async def finished_per_minute(session: AsyncSession, *, since: datetime) -> list[FinishedCount]:
    """Sagas that ended at or after ``since``, counted per minute and final status.

    A saga's ``updated_at`` is when it reached its terminal status (nothing changes a
    finished saga but an operator, who makes it active again); the partial index
    ``ix_sagas_finished_updated`` holds only finished sagas, in that order.
    """
    minute = func.date_trunc("minute", sagas.c.updated_at)
    query = (
        # FINISHED_SQL verbatim, so the planner sees the partial index's predicate.
        select(minute.label("minute"), sagas.c.status, func.count().label("n"))
        .where(text(FINISHED_SQL), sagas.c.updated_at >= since)
        .group_by(minute, sagas.c.status)
        .order_by(minute)
    )
    rows = await session.execute(query)
    return [FinishedCount(minute=r.minute, status=r.status, count=int(r.n)) for r in rows]


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock, which stamps what the overview counts."""
    now: datetime = (await session.execute(select(func.now()))).scalar_one()
    return now


def _current_step(phase: str, cursor: int, steps: list[dict[str, Any]]) -> str | None:
    # Mirrors SagaState.current_step without rebuilding the whole state.
    if Phase(phase) in (Phase.FORWARD, Phase.COMPENSATE) and 0 <= cursor < len(steps):
        name: str = steps[cursor]["name"]
        return name
    return None
