"""Saga rows under a batch of replies: locked in one statement, read back from memory.

Two orchestrators may hold overlapping batches of replies; each locks its batch's sagas
with ``SagaRepository.lock_many`` before handling them. The race below makes sure they
really collide (the first to hold its locks commits only once the other is waiting for
one) and runs it against the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.orchestrator.repository import SagaRecord, SagaRepository
from sagaway.orchestrator.state import Phase, SagaState, SagaStatus, StepState, StepStatus
from tests.support import wait_for

ROUNDS = 20
SAGAS = 10

repo = SagaRepository()

Locker = Callable[[AsyncSession, Sequence[uuid.UUID]], Awaitable[None]]

START = SagaState(
    status=SagaStatus.RUNNING,
    phase=Phase.FORWARD,
    cursor=0,
    steps=(StepState(name="reserve"), StepState(name="charge")),
)


async def insert_sagas(sessions: async_sessionmaker[AsyncSession], count: int) -> list[uuid.UUID]:
    """``count`` new sagas, committed, in no particular order."""
    ids = [uuid.uuid4() for _ in range(count)]
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        for saga_id in ids:
            await repo.add(
                session,
                SagaRecord(
                    id=saga_id,
                    saga_type="locking-test",
                    order_id=None,
                    correlation_id=saga_id,
                    data={},
                    state=START,
                    version=0,
                    created_at=now,
                    updated_at=now,
                ),
            )
    return ids


async def committed(sessions: async_sessionmaker[AsyncSession], saga_id: uuid.UUID) -> SagaRecord:
    """The saga as another transaction sees it."""
    async with sessions() as session:
        record = await repo.get(session, saga_id)
    assert record is not None
    return record


async def lock_many(session: AsyncSession, saga_ids: Sequence[uuid.UUID]) -> None:
    await repo.lock_many(session, saga_ids)


async def one_by_one(session: AsyncSession, saga_ids: Sequence[uuid.UUID]) -> None:
    """What ``lock_many`` replaces: each saga locked as its reply comes up."""
    for saga_id in saga_ids:
        await repo.get(session, saga_id, for_update=True)


async def race(
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncEngine,
    lock: Locker,
    batches: tuple[Sequence[uuid.UUID], Sequence[uuid.UUID]],
) -> list[BaseException | None]:
    """Two transactions lock their batch at the same moment, then bump every saga's
    attempt and commit. Whichever holds its locks first commits only once the other is
    seen waiting for a lock, so the two always collide. Returns each one's error."""
    both_connected = asyncio.Barrier(2)
    pids: dict[int, int] = {}
    first: list[int] = []
    done: set[int] = set()

    async def other_is_stuck(me: int) -> bool:
        other = 1 - me
        if other in done:
            return True
        async with db.connect() as conn:
            waiting = await conn.scalar(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pids[other]},
            )
        return bool(waiting == "Lock")

    async def transaction(me: int, batch: Sequence[uuid.UUID]) -> None:
        try:
            async with sessions() as session, session.begin():
                pids[me] = int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)
                await both_connected.wait()
                await lock(session, batch)
                if not first:
                    first.append(me)
                    await wait_for(partial(other_is_stuck, me), what="the other to wait")
                now = datetime.now(UTC)
                for saga_id in batch:
                    record = await repo.get(session, saga_id, for_update=True)
                    assert record is not None
                    bumped = replace(record.state, attempt=record.state.attempt + 1)
                    await repo.save(session, record, bumped, now)
        finally:
            done.add(me)

    results = await asyncio.gather(
        transaction(0, batches[0]), transaction(1, batches[1]), return_exceptions=True
    )
    return [r if isinstance(r, BaseException) else None for r in results]


def is_deadlock(error: BaseException | None) -> bool:
    return isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) == "40P01"


async def test_overlapping_batches_locked_in_opposite_orders_never_deadlock(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine
) -> None:
    ids = await insert_sagas(sessions, SAGAS)
    # Overlapping, not equal, and handed over in opposite orders.
    batches = (ids[: SAGAS - 2], list(reversed(ids[2:])))

    for _ in range(ROUNDS):
        errors = await race(sessions, db, lock_many, batches)
        assert errors == [None, None]

    # Both transactions of every round committed, and neither overwrote the other's
    # state: each read the saga the other had just committed.
    bumps = Counter(i for batch in batches for i in batch)
    for saga_id in ids:
        record = await committed(sessions, saga_id)
        assert record.state.attempt == ROUNDS * bumps[saga_id]
        assert record.version == 1 + ROUNDS * bumps[saga_id]


async def test_the_race_catches_sagas_locked_one_by_one_in_arrival_order(
    sessions: async_sessionmaker[AsyncSession], db: AsyncEngine
) -> None:
    """The same race fails when the locks are taken in the order replies arrive: it
    can tell a lock order that deadlocks from one that does not."""
    ids = await insert_sagas(sessions, SAGAS)
    batches = (ids, list(reversed(ids)))
    for _ in range(ROUNDS):
        errors = await race(sessions, db, one_by_one, batches)
        if any(is_deadlock(e) for e in errors):
            break
    else:
        pytest.fail(f"no deadlock in {ROUNDS} rounds of locking one by one")
    assert sum(e is None for e in errors) == 1  # PostgreSQL aborts one, the other commits


async def test_a_saved_saga_is_read_back_in_its_transaction_and_written_at_commit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    [saga_id] = await insert_sagas(sessions, 1)
    now = datetime.now(UTC)
    changed = SagaState(
        status=SagaStatus.COMPENSATING,
        phase=Phase.COMPENSATE,
        cursor=1,
        steps=(
            StepState(
                name="reserve",
                status=StepStatus.COMPENSATING,
                attempts=1,
                compensation_attempts=1,
                started_at=now - timedelta(seconds=5),
                finished_at=now - timedelta(seconds=4),
            ),
            StepState(name="charge", status=StepStatus.FAILED, attempts=2, error="declined"),
        ),
        attempt=1,
        pending=uuid.uuid4(),
        wake_at=now + timedelta(minutes=1),
        rejection_reason="card declined",
    )

    async with sessions() as session:
        async with session.begin():
            record = await repo.get(session, saga_id, for_update=True)
            assert record is not None and record.state == START
            saved = await repo.save(session, record, changed, now)
            assert (saved.state, saved.version) == (changed, record.version + 1)
            # This transaction reads what it saved (the row is written at commit)...
            assert await repo.get(session, saga_id) == saved
            assert await repo.get(session, saga_id, for_update=True) == saved
            await repo.lock_many(session, [saga_id])
            assert await repo.get(session, saga_id) == saved
            # ...while others still see the saga as it was.
            assert (await committed(sessions, saga_id)).state == START
        after = await committed(sessions, saga_id)
        assert (after.state, after.version) == (changed, saved.version)

        # Another orchestrator moves the saga on; the next transaction of this session
        # reads the row again instead of what the previous one held in memory.
        async with sessions() as other, other.begin():
            theirs = await repo.get(other, saga_id, for_update=True)
            assert theirs is not None
            await repo.save(other, theirs, replace(changed, attempt=2), now)
        async with session.begin():
            await repo.lock_many(session, [saga_id])
            again = await repo.get(session, saga_id, for_update=True)
            assert again is not None
            assert (again.state.attempt, again.version) == (2, saved.version + 1)


async def test_a_save_rolled_back_is_neither_written_nor_remembered(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    [saga_id] = await insert_sagas(sessions, 1)
    async with sessions() as session:
        await session.begin()
        record = await repo.get(session, saga_id, for_update=True)
        assert record is not None
        failed = replace(record.state, status=SagaStatus.FAILED, failure_reason="boom")
        await repo.save(session, record, failed, datetime.now(UTC))
        await session.rollback()

        async with session.begin():
            assert await repo.get(session, saga_id) == record
    assert await committed(sessions, saga_id) == record
