"""A transaction's deferred writes leave at commit as one statement, on the real PostgreSQL.

``outbox.deferred`` gathers every deferred insert and update of a transaction and sends
them from the session's ``before_commit`` hook as one ``WITH ... SELECT 1`` statement
over ``unnest()``ed arrays, cached per shape (tables and columns). These tests count
the statements a commit sends on an engine of their own, read back what was written,
and look at the statement cache. Every test writes sagas and outbox rows of its own
(the outbox rows aimed at an exchange named for the test) and deletes them afterwards,
so no relay or sweeper of a later test meets them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.orchestrator.coordinator import LocalResult, Routing, SagaContext, SagaCoordinator
from sagaway.orchestrator.dsl import Action, Local, RetryPolicy, SagaDefinition, Step
from sagaway.orchestrator.history import HistoryEntry, HistoryKind
from sagaway.orchestrator.repository import SagaRecord, SagaRepository
from sagaway.orchestrator.state import Outcome, Phase, SagaState, SagaStatus, StepState, StepStatus
from sagaway.orchestrator.tables import outbox, saga_events, sagas
from sagaway.outbox import deferred
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.deferred import defer_insert, defer_update, flush_deferred
from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.handoff import Handoff
from sagaway.outbox.publisher import PublishResult, RawMessage
from sagaway.outbox.settings import Settings
from sagaway.outbox.writer import OutboxWriter
from sagaway.services.orders.tables import idempotency_keys, orders

writer = OutboxWriter(outbox)
repo = SagaRepository()
SAGA_TYPE = "deferred_flush_test"
NOW = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


@dataclass
class Scratch:
    """What a test wrote: an exchange its outbox rows aim at, and its sagas."""

    exchange: str
    saga_ids: list[uuid.UUID] = field(default_factory=list)

    def saga_id(self) -> uuid.UUID:
        saga_id = uuid.uuid4()
        self.saga_ids.append(saga_id)
        return saga_id

    def message(self, saga_id: uuid.UUID, n: int = 0) -> OutgoingMessage:
        envelope = Envelope(
            message_type=f"Deferred{n}", saga_id=saga_id, correlation_id=saga_id, payload={"n": n}
        )
        return OutgoingMessage(envelope=envelope, exchange=self.exchange, routing_key="none")


@pytest.fixture
async def scratch(settings: Settings, db: AsyncEngine) -> AsyncIterator[Scratch]:
    """Names for the test's rows; its sagas (with their history) and outbox rows are
    deleted afterwards."""
    found = Scratch(exchange=f"{settings.namespace}.deferred-{uuid.uuid4().hex[:8]}")
    yield found
    async with db.begin() as conn:
        await conn.execute(delete(outbox).where(outbox.c.exchange == found.exchange))
        if found.saga_ids:
            await conn.execute(delete(orders).where(orders.c.saga_id.in_(found.saga_ids)))
            await conn.execute(delete(sagas).where(sagas.c.id.in_(found.saga_ids)))


@dataclass
class Counted:
    """Sessions on an engine of the test's own, and every statement it sent."""

    sessions: async_sessionmaker[AsyncSession]
    statements: list[str] = field(default_factory=list)

    def sent(self) -> list[str]:
        """The statements sent since the last call (transaction control left out)."""
        sent = [s for s in self.statements if s.strip().upper() not in ("BEGIN", "COMMIT")]
        self.statements.clear()
        return sent


@pytest.fixture
async def counted(settings: Settings) -> AsyncIterator[Counted]:
    """An engine whose cursor executions are recorded (after it first connected)."""
    engine = create_engine(settings.database_url, pool_size=1)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    found = Counted(sessions=session_factory(engine))

    def record(_conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        found.statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield found
    await engine.dispose()


def state(
    status: SagaStatus = SagaStatus.RUNNING,
    *,
    cursor: int = 0,
    steps: Sequence[StepState] = (),
    attempt: int = 1,
    pending: uuid.UUID | None = None,
    wake_at: datetime | None = None,
    failure_reason: str | None = None,
    rejection_reason: str | None = None,
) -> SagaState:
    return SagaState(
        status=status,
        phase=Phase.FORWARD,
        cursor=cursor,
        steps=tuple(steps) or (StepState(name="first"), StepState(name="second")),
        attempt=attempt,
        pending=pending,
        wake_at=wake_at,
        failure_reason=failure_reason,
        rejection_reason=rejection_reason,
    )


async def add_saga(session: AsyncSession, saga_id: uuid.UUID) -> None:
    await repo.add(
        session,
        SagaRecord(
            id=saga_id,
            saga_type=SAGA_TYPE,
            order_id=None,
            correlation_id=saga_id,
            data={"n": 1},
            state=state(),
            version=0,
            created_at=NOW,
            updated_at=NOW,
        ),
    )


async def committed_saga(sessions: async_sessionmaker[AsyncSession], saga_id: uuid.UUID) -> None:
    async with sessions() as session, session.begin():
        await add_saga(session, saga_id)


async def saga_row(db: AsyncEngine, saga_id: uuid.UUID) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(select(sagas).where(sagas.c.id == saga_id))).one()


async def outbox_ids(db: AsyncEngine, exchange: str) -> list[tuple[int, uuid.UUID]]:
    """``(id, message_id)`` of the rows aimed at ``exchange``, in id order."""
    async with db.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.id, outbox.c.message_id)
            .where(outbox.c.exchange == exchange)
            .order_by(outbox.c.id)
        )
        return [(r.id, r.message_id) for r in rows]


async def history_details(db: AsyncEngine, saga_id: uuid.UUID) -> list[str]:
    """The saga's history as the API renders it, one sentence per entry."""
    async with AsyncSession(db) as session:
        return [row.detail for row in await SagaRepository().history(session, saga_id)]


async def test_a_transaction_deferring_to_several_tables_sends_one_statement_at_commit(
    counted: Counted, db: AsyncEngine, scratch: Scratch
) -> None:
    existing, fresh = scratch.saga_id(), scratch.saga_id()
    await committed_saga(counted.sessions, existing)
    record = await _record(counted.sessions, existing)
    counted.sent()
    messages = [scratch.message(fresh, n) for n in range(3)]

    async with counted.sessions() as session:
        await session.begin()
        await add_saga(session, fresh)
        await repo.record(
            session, fresh, [HistoryEntry(kind=HistoryKind.TRANSITION, note="started")], NOW
        )
        await writer.add(session, *messages)
        done = state(SagaStatus.COMPLETED, cursor=2)
        await repo.save(session, record, done, NOW)
        await repo.record(
            session, existing, [HistoryEntry(kind=HistoryKind.TRANSITION, note="done")], NOW
        )
        # Deferring sends nothing...
        assert counted.sent() == []
        await session.commit()
    # ...and the commit sends it all as one statement.
    [statement] = counted.sent()
    assert statement.lstrip().startswith("WITH")

    assert (await saga_row(db, fresh)).status == "RUNNING"
    assert (await saga_row(db, existing)).status == "COMPLETED"
    assert await history_details(db, fresh) == ["started"]
    assert await history_details(db, existing) == ["done"]
    assert [m for _, m in await outbox_ids(db, scratch.exchange)] == [
        m.envelope.message_id for m in messages
    ]


async def _record(sessions: async_sessionmaker[AsyncSession], saga_id: uuid.UUID) -> SagaRecord:
    async with sessions() as session:
        found = await repo.get(session, saga_id)
    assert found is not None
    return found


@pytest.mark.parametrize("sizes", [[1], [1, 50, 3, 100, 46], [200]])
async def test_outbox_rows_get_ids_in_the_order_they_were_deferred(
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncEngine,
    scratch: Scratch,
    sizes: list[int],
) -> None:
    saga_id = scratch.saga_id()
    # Several sagas' messages interleaved, so no other column happens to sort like ids.
    sent: list[OutgoingMessage] = []
    async with sessions() as session, session.begin():
        await add_saga(session, saga_id)
        for call, size in enumerate(sizes):
            batch = [scratch.message(uuid.uuid4() if n % 2 else saga_id, n) for n in range(size)]
            await writer.add(session, *reversed(batch))
            sent.extend(reversed(batch))
            # Another table deferred between the calls.
            entry = HistoryEntry(kind=HistoryKind.TRANSITION, note=f"call {call}")
            await repo.record(session, saga_id, [entry], NOW)

    written = await outbox_ids(db, scratch.exchange)
    assert [m for _, m in written] == [m.envelope.message_id for m in sent]
    assert len(written) == sum(sizes)
    assert await history_details(db, saga_id) == [f"call {n}" for n in range(len(sizes))]


# JSONB values of every shape, in one array: a list must stay one value (not become a
# dimension of the array), nested nulls must stay JSON nulls.
JSON_DATA: list[Any] = [
    {"items": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2}]},
    {"nested": [[1, 2], [3, [4, [5]]]], "empty": [], "none": None, "obj": {"a": {"b": [None]}}},
    {},
    {"text": "quotes \" and ' commas, {braces} [brackets] \\ backslash \u00fcnicode \u2603"},
    {"numbers": [0, -1, 1.5, 1e20, True, False], "null_in_list": [None, None]},
    {"deep": {"a": [{"b": [{"c": []}]}]}},
    {"only": None},
]
JSON_STEPS: list[Any] = [
    [],
    [[1, 2], [3]],
    [None],
    ["a", 1, None, {"x": []}],
    [{"name": "first", "status": "PENDING", "error": None}],
    [[[]]],
    None,  # a JSON null (the column is NOT NULL)
]


async def test_values_of_every_type_round_trip_exactly(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine, scratch: Scratch
) -> None:
    ids = [scratch.saga_id() for _ in JSON_DATA]
    all_null = [n % 2 == 0 for n in range(len(ids))]
    rows = [
        {
            "id": saga_id,
            "saga_type": SAGA_TYPE,
            "order_id": None if empty else uuid.uuid4(),
            "correlation_id": saga_id,
            "status": "RUNNING",
            "phase": "forward",
            "cursor": n,
            "attempt": n,
            "pending_message_id": None if empty else uuid.uuid4(),
            "wake_at": None if empty else NOW + timedelta(days=3650, microseconds=n),
            "failure_reason": None if empty else "a,\"b\"}{\\ '\u2603'",
            "rejection_reason": None,
            "steps": steps,
            "data": data,
            "traceparent": None
            if empty
            else "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "created_at": NOW,
            "updated_at": NOW + timedelta(microseconds=n),
        }
        for n, (saga_id, empty, steps, data) in enumerate(
            zip(ids, all_null, JSON_STEPS, JSON_DATA, strict=True)
        )
    ]
    bodies = [b"\x00", b"\x00\x01\x02\xff\x00", bytes(range(256)), b"", b"{}"]
    outbox_rows = [
        {
            "message_id": uuid.uuid4(),
            "saga_id": ids[0],
            "correlation_id": ids[0],
            "message_type": "RoundTrip",
            "exchange": scratch.exchange,
            "routing_key": "none",
            "body": body,
            "traceparent": None
            if n % 2
            else "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "last_error": None if n % 2 == 0 else "x\x01y",
        }
        for n, body in enumerate(bodies)
    ]
    events = [
        {
            "saga_id": ids[1],
            "at": NOW,
            "kind": "transition",
            "step": None if n % 2 else "first",
            "message_id": uuid.uuid4() if n % 2 else None,
            "note": f"line {n}",
        }
        for n in range(4)
    ]
    async with sessions() as session, session.begin():
        defer_insert(session, sagas, rows)
        defer_insert(session, saga_events, events)
        defer_insert(session, outbox, outbox_rows)

    async with db.connect() as conn:
        stored = {r.id: r for r in await conn.execute(select(sagas).where(sagas.c.id.in_(ids)))}
        stored_bodies = {
            r.message_id: r
            for r in await conn.execute(
                select(
                    outbox.c.message_id, outbox.c.body, outbox.c.traceparent, outbox.c.last_error
                ).where(outbox.c.exchange == scratch.exchange)
            )
        }
        stored_events = (
            await conn.execute(
                select(saga_events.c.step, saga_events.c.message_id, saga_events.c.note)
                .where(saga_events.c.saga_id == ids[1])
                .order_by(saga_events.c.id)
            )
        ).all()
        # As PostgreSQL sees them: a list stays one JSON array (not a dimension of the
        # parameter array), None a JSON null.
        kinds = {
            r.id: r.kind
            for r in await conn.execute(
                select(sagas.c.id, func.jsonb_typeof(sagas.c.steps).label("kind")).where(
                    sagas.c.id.in_(ids)
                )
            )
        }
    for row in rows:
        got = stored[row["id"]]
        assert {k: getattr(got, k) for k in row} == row
    assert [kinds[i] for i in ids] == ["array"] * (len(ids) - 1) + ["null"]
    for row in outbox_rows:
        got = stored_bodies[row["message_id"]]
        assert (bytes(got.body), got.traceparent, got.last_error) == (
            row["body"],
            row["traceparent"],
            row["last_error"],
        )
    assert [(e.step, e.message_id, e.note) for e in stored_events] == [
        (e["step"], e["message_id"], e["note"]) for e in events
    ]


async def test_deferred_updates_round_trip_nulls_and_json(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine, scratch: Scratch
) -> None:
    cleared, filled = scratch.saga_id(), scratch.saga_id()
    for saga_id in (cleared, filled):
        await committed_saga(sessions, saga_id)
    steps = [
        StepState(
            name="first", status=StepStatus.SUCCEEDED, attempts=2, error='boom, "quoted" {x}'
        ),
        StepState(name="second", status=StepStatus.RUNNING, started_at=NOW),
    ]
    pending = uuid.uuid4()
    async with sessions() as session, session.begin():
        record = await repo.get(session, cleared, for_update=True)
        assert record is not None
        await repo.save(session, record, state(attempt=0), NOW)
        record = await repo.get(session, filled, for_update=True)
        assert record is not None
        full = state(
            SagaStatus.COMPENSATING,
            cursor=1,
            steps=steps,
            attempt=3,
            pending=pending,
            wake_at=NOW + timedelta(microseconds=7),
            failure_reason='why, "exactly" {}',
            rejection_reason="out_of_stock",
        )
        await repo.save(session, record, full, NOW + timedelta(seconds=1))

    async with sessions() as session:
        got_cleared = await repo.get(session, cleared)
        got_filled = await repo.get(session, filled)
    assert got_cleared is not None and got_filled is not None
    assert got_cleared.state == state(attempt=0)
    assert got_filled.state == full
    assert got_filled.updated_at == NOW + timedelta(seconds=1)
    assert got_filled.data == {"n": 1}


async def test_a_saga_saved_twice_in_one_transaction_is_written_once_with_its_last_state(
    sessions: async_sessionmaker[AsyncSession],
    counted: Counted,
    db: AsyncEngine,
    scratch: Scratch,
) -> None:
    saga_id = scratch.saga_id()
    await committed_saga(sessions, saga_id)
    first = state(cursor=1, attempt=1)
    last = state(SagaStatus.COMPLETED, cursor=2, attempt=2, failure_reason="last")

    # On a connection that has done nothing else, so that its statistics counters
    # (pending until the backend reports them) hold only this transaction's work.
    async with counted.sessions() as session, session.begin():
        record = await repo.get(session, saga_id, for_update=True)
        assert record is not None
        middle = await repo.save(session, record, first, NOW + timedelta(seconds=1))
        # The transaction reads its own latest state from memory.
        assert await repo.get(session, saga_id, for_update=True) == middle
        await repo.save(session, middle, last, NOW + timedelta(seconds=2))
        counted.sent()
        await flush_deferred(session)
        [statement] = counted.sent()
        updated = await session.scalar(
            text(
                "SELECT n_tup_upd FROM pg_stat_xact_user_tables "
                "WHERE schemaname = 'sagas' AND relname = 'sagas'"
            )
        )
    assert statement.lstrip().startswith("WITH")
    assert updated == 1

    row = await saga_row(db, saga_id)
    assert (row.status, row.cursor, row.attempt, row.version) == ("COMPLETED", 2, 2, 3)
    assert (row.failure_reason, row.updated_at) == ("last", NOW + timedelta(seconds=2))


async def test_one_shape_is_built_once_and_reused(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine, scratch: Scratch
) -> None:
    saga_id = scratch.saga_id()
    await committed_saga(sessions, saga_id)

    def rows(count: int) -> list[dict[str, Any]]:
        # A column order no other code defers in: a shape of this test's own.
        return [
            {
                "last_error": f"shape test {n}",
                "body": b"{}",
                "routing_key": "none",
                "exchange": scratch.exchange,
                "message_type": "Shape",
                "correlation_id": saga_id,
                "saga_id": saga_id,
                "message_id": uuid.uuid4(),
            }
            for n in range(count)
        ]

    async def commit(count: int, *, with_update: bool = False) -> set[Any]:
        before = dict(deferred._STATEMENTS)
        async with sessions() as session, session.begin():
            defer_insert(session, outbox, rows(count))
            if with_update:
                defer_update(session, sagas, saga_id, {"failure_reason": "shape test"})
        for key, statement in before.items():
            assert deferred._STATEMENTS[key] is statement
        return set(deferred._STATEMENTS) - set(before)

    assert len(await commit(1)) == 1  # a new shape: built once
    assert await commit(5) == set()  # the same shape with more rows: reused
    assert await commit(1) == set()
    assert len(await commit(2, with_update=True)) == 1  # one more table: another shape
    assert await commit(3, with_update=True) == set()
    assert len(await outbox_ids(db, scratch.exchange)) == 1 + 5 + 1 + 2 + 3


async def test_rows_of_one_table_with_different_columns_are_refused_clearly(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine, scratch: Scratch
) -> None:
    saga_id = scratch.saga_id()
    await committed_saga(sessions, saga_id)

    async with sessions() as session:
        with pytest.raises(ValueError, match=r"sagas\.outbox .*same columns"):
            async with session.begin():
                await writer.add(session, scratch.message(saga_id, 1))
                # Started after a row was added: the next rows carry claim columns.
                Handoff(engine=db, publisher=_NeverPublisher(), lease_s=30).start(session)
                await writer.add(session, scratch.message(saga_id, 2))
        with pytest.raises(ValueError, match=r"sagas\.sagas .*same columns"):
            async with session.begin():
                defer_update(session, sagas, saga_id, {"failure_reason": "a"})
                defer_update(session, sagas, uuid.uuid4(), {"rejection_reason": "b"})
        # Nothing of either was written, and the session goes on.
        after = scratch.message(saga_id, 3)
        async with session.begin():
            await writer.add(session, after)

    assert [m for _, m in await outbox_ids(db, scratch.exchange)] == [after.envelope.message_id]
    assert (await saga_row(db, saga_id)).failure_reason is None


class _NeverPublisher:
    async def publish_batch(self, messages: Sequence[RawMessage]) -> list[PublishResult]:
        raise AssertionError("nothing is published here")


async def test_a_savepoint_rolled_back_restores_the_deferred_saga_state_of_its_start(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine, scratch: Scratch
) -> None:
    saga_id = scratch.saga_id()
    await committed_saga(sessions, saga_id)
    kept = state(cursor=1)

    async with sessions() as session, session.begin():
        record = await repo.get(session, saga_id, for_update=True)
        assert record is not None
        saved = await repo.save(session, record, kept, NOW)
        await repo.record(
            session, saga_id, [HistoryEntry(kind=HistoryKind.TRANSITION, note="kept")], NOW
        )
        with contextlib.suppress(RuntimeError):
            async with session.begin_nested():
                await repo.save(session, saved, state(SagaStatus.FAILED, cursor=9), NOW)
                entry = HistoryEntry(kind=HistoryKind.TRANSITION, note="undone")
                await repo.record(session, saga_id, [entry], NOW)
                raise RuntimeError("undo this part only")
        # The transaction's memory is back to what it was, not to nothing.
        assert await repo.get(session, saga_id, for_update=True) == saved
        async with session.begin_nested():  # released: what it deferred stays
            entry = HistoryEntry(kind=HistoryKind.TRANSITION, note="released")
            await repo.record(session, saga_id, [entry], NOW)

    row = await saga_row(db, saga_id)
    assert (row.status, row.cursor, row.version) == ("RUNNING", 1, 2)
    assert await history_details(db, saga_id) == ["kept", "released"]


async def test_a_saga_started_with_a_local_step_first_sees_the_rows_deferred_before_it(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine, scratch: Scratch
) -> None:
    seen: list[str | None] = []

    async def read_order(session: AsyncSession, saga: SagaContext) -> LocalResult:
        order_id = uuid.UUID(str(saga.data["order_id"]))
        seen.append(await session.scalar(select(orders.c.status).where(orders.c.id == order_id)))
        return LocalResult(Outcome.SUCCEEDED)

    definition = SagaDefinition(
        name=SAGA_TYPE,
        steps=(
            Step(name="check_order", action=Local(handler="test.read_order")),
            Step(
                name="tell_someone",
                action=Action(
                    participant="nobody",
                    command="TellSomeone",
                    payload=lambda data: {"order_id": data["order_id"]},
                ),
            ),
        ),
    )
    coordinator = SagaCoordinator(
        definitions={SAGA_TYPE: definition},
        defaults=RetryPolicy(max_attempts=3, initial_interval_s=1, max_interval_s=1, timeout_s=30),
        local_handlers={"test.read_order": read_order},
        outbox=writer,
        routing=Routing(commands_exchange=scratch.exchange),
    )
    saga_id, order_id = scratch.saga_id(), uuid.uuid4()

    async with sessions() as session, session.begin():
        defer_insert(
            session,
            orders,
            [
                {
                    "id": order_id,
                    "saga_id": saga_id,
                    "customer_id": "deferred-test",
                    "items": [{"sku": "A", "quantity": 1}],
                    "total_cents": 100,
                    "currency": "EUR",
                    "status": "PENDING",
                }
            ],
        )
        started = await coordinator.start(
            session,
            saga_type=SAGA_TYPE,
            saga_id=saga_id,
            correlation_id=saga_id,
            order_id=order_id,
            data={"order_id": str(order_id)},
        )

    assert seen == ["PENDING"]
    assert started.cursor == 1 and started.status is SagaStatus.RUNNING
    row = await saga_row(db, saga_id)
    assert (row.status, row.cursor) == ("RUNNING", 1)
    [(_, command_id)] = await outbox_ids(db, scratch.exchange)
    assert command_id == started.pending
    assert "test.read_order (succeeded)" in await history_details(db, saga_id)


async def test_a_row_inserted_then_updated_in_one_transaction_keeps_the_update(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine, scratch: Scratch
) -> None:
    saga_id = scratch.saga_id()
    async with sessions() as session, session.begin():
        await add_saga(session, saga_id)
        record = await repo.get(session, saga_id, for_update=True)
        assert record is not None
        await repo.save(session, record, replace(state(), cursor=1), NOW)

    row = await saga_row(db, saga_id)
    assert (row.cursor, row.version) == (1, 2)


async def test_a_guard_writes_everything_in_one_statement_only_when_its_row_is_new(
    counted: Counted, db: AsyncEngine, scratch: Scratch
) -> None:
    key = f"guard-{uuid.uuid4()}"
    first, second = scratch.saga_id(), scratch.saga_id()

    async def place(saga_id: uuid.UUID, request_hash: str) -> bool | None:
        async with counted.sessions() as session, session.begin():
            deferred.defer_guard(
                session,
                idempotency_keys,
                {
                    "key": key,
                    "request_hash": request_hash,
                    "order_id": saga_id,
                    "saga_id": saga_id,
                    "status_code": 202,
                },
                conflict=["key"],
            )
            await add_saga(session, saga_id)
            await writer.add(session, scratch.message(saga_id))
            await flush_deferred(session)
            return deferred.guard_won(session)

    try:
        assert await place(first, "a") is True
        # The key, the saga and its command: one statement.
        [statement] = counted.sent()
        assert statement.lstrip().startswith("WITH")
        # The same key again: the statement writes nothing else, and says so.
        assert await place(second, "b") is False
        assert len(counted.sent()) == 1
        assert (await saga_row(db, first)).status == "RUNNING"
        async with db.connect() as conn:
            assert await conn.scalar(select(func.count()).where(sagas.c.id == second)) == 0
            kept = (
                await conn.execute(
                    select(idempotency_keys.c.saga_id, idempotency_keys.c.request_hash).where(
                        idempotency_keys.c.key == key
                    )
                )
            ).one()
            commands = (
                await conn.execute(
                    select(outbox.c.saga_id).where(outbox.c.exchange == scratch.exchange)
                )
            ).all()
        assert tuple(kept) == (first, "a")
        assert [c.saga_id for c in commands] == [first]
    finally:
        async with db.begin() as conn:
            await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.key == key))


async def test_a_guard_that_loses_hands_nothing_to_a_handoff(
    counted: Counted, scratch: Scratch
) -> None:
    key = f"guard-{uuid.uuid4()}"
    try:
        async with counted.sessions() as session, session.begin():
            deferred.defer_guard(
                session,
                idempotency_keys,
                {
                    "key": key,
                    "request_hash": "x",
                    "order_id": uuid.uuid4(),
                    "saga_id": uuid.uuid4(),
                    "status_code": 202,
                },
                conflict=["key"],
            )
        saga_id = scratch.saga_id()
        async with counted.sessions() as session, session.begin():
            deferred.defer_guard(
                session,
                idempotency_keys,
                {
                    "key": key,
                    "request_hash": "x",
                    "order_id": saga_id,
                    "saga_id": saga_id,
                    "status_code": 202,
                },
                conflict=["key"],
            )
            await writer.add(session, scratch.message(saga_id))
            await flush_deferred(session)
            assert deferred.guard_won(session) is False
            assert session.sync_session.info.get("sagaway.written") in (None, [])
    finally:
        async with counted.sessions() as session, session.begin():
            await session.execute(delete(idempotency_keys).where(idempotency_keys.c.key == key))
