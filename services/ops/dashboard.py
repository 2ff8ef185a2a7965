"""What the operator dashboard shows: the overview, saga search pages, one saga's story.

Shared by the dashboard's HTTP routes; everything here reads, nothing writes.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aio_pika
from sqlalchemy import ColumnElement, Select, Table, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.coordinator import SagaCoordinator, SagaNotFound
from sagaway.orchestrator.dsl import Action, Local, SagaDefinition
from sagaway.orchestrator.history import HistoryRow
from sagaway.orchestrator.queries import (
    FINISHED_STATUSES,
    SagaFilter,
    SagaSummary,
    count_by_status,
    database_now,
    finished_per_minute,
    search_sagas,
)
from sagaway.orchestrator.repository import SagaRecord
from sagaway.orchestrator.state import SagaStatus
from sagaway.outbox.amqp import Topology, connect
from sagaway.outbox.dead_letters import peek
from sagaway.outbox.errors import BrokerUnavailable
from sagaway.outbox.settings import Settings
from sagaway.services.ops.sagas import decode_cursor, encode_cursor

# Counts are exact up to here and estimated from the table's statistics beyond, so the
# overview stays fast with millions of sagas.
COUNT_CAP = 50_000
THROUGHPUT_MINUTES = 15
BROKER_TIMEOUT_S = 3.0


# ------------------------------------------------------------------ overview


@dataclass(frozen=True, slots=True)
class MinuteBucket:
    """Sagas that ended during the minute starting at ``minute``, by final status."""

    minute: datetime
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Rows of one outbox still to publish, and rows the relay gave up on.

    Attributes:
        unpublished: rows waiting for the relay (not given up on).
        oldest_at: when the oldest of them was written.
        dead: rows the relay gave up on; they hold back their saga's later messages
            until an operator deals with them.
    """

    outbox: str
    unpublished: int
    oldest_at: datetime | None
    oldest_age_s: float | None
    dead: int


@dataclass(frozen=True, slots=True)
class DeadLetterCount:
    """Messages waiting in one dead-letter queue."""

    queue: str
    count: int


@dataclass(frozen=True, slots=True)
class Overview:
    """The dashboard's first page.

    Attributes:
        counts: sagas by status; exact below ``count_cap``.
        estimated: the statuses whose count is a statistics-based estimate.
        dead_letters: None when RabbitMQ could not be asked; ``dead_letters_error``
            then says why.
    """

    at: datetime
    counts: dict[str, int]
    estimated: list[str]
    count_cap: int
    throughput: list[MinuteBucket]
    outbox: list[OutboxBacklog]
    dead_letters: list[DeadLetterCount] | None
    dead_letters_error: str | None
    saga_types: list[str]


async def overview(session: AsyncSession, settings: Settings, app: SagaApp) -> Overview:
    """Counts by status, recent throughput, outbox backlog and dead letters."""
    now = await database_now(session)
    counts = await count_by_status(session, cap=COUNT_CAP)
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=THROUGHPUT_MINUTES - 1)
    finished = await finished_per_minute(session, since=first)
    buckets = {
        first + timedelta(minutes=i): {s.value: 0 for s in FINISHED_STATUSES}
        for i in range(THROUGHPUT_MINUTES)
    }
    for row in finished:
        # date_trunc answers in the session's time zone; compare as instants.
        bucket = buckets.get(row.minute.astimezone(first.tzinfo))
        if bucket is not None:
            bucket[row.status] = bucket.get(row.status, 0) + row.count
    backlog = [
        await _backlog(session, name, table, now) for name, table in app.outbox_tables.items()
    ]
    try:
        letters: list[DeadLetterCount] | None = await dead_letter_counts(
            settings,
            app.topology_for(settings),
        )
        letters_error = None
    except BrokerUnavailable as exc:
        letters, letters_error = None, str(exc)
    return Overview(
        at=now,
        counts={c.status: c.count for c in counts},
        estimated=[c.status for c in counts if not c.exact],
        count_cap=COUNT_CAP,
        throughput=[MinuteBucket(minute=m, counts=c) for m, c in sorted(buckets.items())],
        outbox=backlog,
        dead_letters=letters,
        dead_letters_error=letters_error,
        saga_types=sorted(app.definitions),
    )


async def _backlog(session: AsyncSession, name: str, table: Table, now: datetime) -> OutboxBacklog:
    # Every read stays on the outbox's partial indexes of unpublished rows; ``id``
    # order is write order, so the lowest pending id is the oldest waiting row.
    unpublished = table.c.published_at.is_(None)
    pending = unpublished & table.c.dead_at.is_(None)
    dead = unpublished & table.c.dead_at.is_not(None)
    oldest = select(table.c.created_at).where(pending).order_by(table.c.id).limit(1)
    n = await _count(session, table, pending)
    oldest_at: datetime | None = (await session.execute(oldest)).scalar_one_or_none()
    return OutboxBacklog(
        outbox=name,
        unpublished=n,
        oldest_at=oldest_at,
        oldest_age_s=max(0.0, (now - oldest_at).total_seconds()) if oldest_at else None,
        dead=await _count(session, table, dead),
    )


async def _count(session: AsyncSession, table: Table, where: ColumnElement[bool]) -> int:
    capped: Select[tuple[Any]] = (
        select(literal_column("1")).select_from(table).where(where).limit(COUNT_CAP)
    )
    query = select(func.count()).select_from(capped.subquery())
    return int((await session.execute(query)).scalar_one())


async def dead_letter_counts(settings: Settings, topology: Topology) -> list[DeadLetterCount]:
    """How many messages each dead-letter queue holds; raises BrokerUnavailable."""
    names = [topology.dead_letter_queue(q.name) for q in topology.queues]
    try:
        connection = await asyncio.wait_for(
            connect(settings.amqp_url, name="sagaway-dashboard"), BROKER_TIMEOUT_S
        )
    except TimeoutError as exc:
        raise BrokerUnavailable("RabbitMQ did not answer in time") from exc
    try:
        queues = await asyncio.wait_for(peek(connection, names, limit=0), BROKER_TIMEOUT_S)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        raise BrokerUnavailable(f"cannot read dead-letter queues: {type(exc).__name__}") from exc
    finally:
        await connection.close()
    return [DeadLetterCount(queue=q.queue, count=q.count) for q in queues]


# ------------------------------------------------------------------ search


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of a saga search and the cursor of the next (None on the last)."""

    items: list[SagaSummary]
    next_cursor: str | None


async def search(
    session: AsyncSession, filters: SagaFilter, *, limit: int, cursor: str | None
) -> SearchPage:
    """A page of sagas matching ``filters``, newest first; raises BadCursor.

    Cursors have the format of ``GET /admin/sagas``'s, so either list's cursor is
    understood by the other.
    """
    before = decode_cursor(cursor) if cursor else None
    rows = await search_sagas(session, filters, limit=limit + 1, before=before)
    items = rows[:limit]
    more = len(rows) > limit and bool(items)
    return SearchPage(
        items=items,
        next_cursor=encode_cursor(items[-1].created_at, items[-1].id) if more else None,
    )


# ------------------------------------------------------------------ one saga


@dataclass(frozen=True, slots=True)
class LaneSpec:
    """A step of the saga's definition as the timeline draws it."""

    name: str
    action: str
    compensation: str | None
    pivot: bool


@dataclass(frozen=True, slots=True)
class SagaStory:
    """Everything the saga page shows.

    Attributes:
        abort_blocked: why an abort would be refused, or None when it would be accepted.
    """

    record: SagaRecord
    history: list[HistoryRow]
    lanes: list[LaneSpec]
    epilogue: list[str]
    can_retry: bool
    can_abort: bool
    abort_blocked: str | None


async def saga_story(
    session: AsyncSession, coordinator: SagaCoordinator, saga_id: uuid.UUID
) -> SagaStory:
    """The saga, its history and the operator actions it allows; raises SagaNotFound."""
    record = await coordinator.repository.get(session, saga_id)
    if record is None:
        raise SagaNotFound(str(saga_id))
    history = await coordinator.repository.history(session, saga_id)
    machine = coordinator.machine(record.saga_type)
    # A saga its type's current definition no longer fits (or whose type is gone) is
    # refused by retry and abort alike; the page says why instead of offering them.
    state = record.state
    unfinished = state.status.is_active or state.status is SagaStatus.FAILED
    refusal = coordinator.refusal(record) if unfinished else None
    blocked: str | None = None
    if refusal is not None:
        blocked = f"saga cannot run under its type's current definition: {refusal}"
    elif machine is not None:
        blocked = machine.abort_refusal(state)
    definition = None if machine is None else machine.definition
    return SagaStory(
        record=record,
        history=history,
        lanes=[] if definition is None else _lanes(definition),
        epilogue=[] if definition is None else [_describe(a) for a in definition.on_compensated],
        can_retry=state.status is SagaStatus.FAILED and refusal is None,
        can_abort=blocked is None,
        abort_blocked=blocked,
    )


def _lanes(definition: SagaDefinition) -> list[LaneSpec]:
    return [
        LaneSpec(
            name=s.name,
            action=_describe(s.action),
            compensation=_describe(s.compensation) if s.compensation is not None else None,
            pivot=s.pivot,
        )
        for s in definition.steps
    ]


def _describe(action: Action | Local) -> str:
    if isinstance(action, Local):
        return f"local {action.handler}"
    return f"{action.command} to {action.participant}"
