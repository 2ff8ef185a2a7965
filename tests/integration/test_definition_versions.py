"""Definition versions against real rows: the start-up check, and the engine driving (or
refusing) sagas started under an older definition."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.definition_report import report_definitions
from sagaway.orchestrator.coordinator import Routing, SagaCoordinator
from sagaway.orchestrator.definition_check import check_definitions
from sagaway.orchestrator.dsl import Action, RetryPolicy, SagaDefinition, Step
from sagaway.orchestrator.history import HistoryKind
from sagaway.orchestrator.repository import SagaRepository
from sagaway.orchestrator.state import SagaState, SagaStatus
from sagaway.orchestrator.state_machine import InvalidRequest
from sagaway.orchestrator.tables import outbox, sagas
from sagaway.outbox.envelope import Envelope
from sagaway.outbox.errors import Unprocessable
from sagaway.outbox.settings import Settings
from sagaway.outbox.writer import OutboxWriter
from sagaway.services.order_app import order_app
from tests.support import captured_log_events

pytestmark = pytest.mark.integration

DEFAULTS = RetryPolicy(max_attempts=3, initial_interval_s=1, max_interval_s=1, timeout_s=30)


def _step(name: str) -> Step:
    command = "".join(part.title() for part in name.split("_"))
    return Step(
        name=name,
        action=Action(participant="nobody", command=command, payload=lambda d: {}),
        compensation=Action(participant="nobody", command=f"Undo{command}", payload=lambda d: {}),
    )


class Trip:
    """One test's saga type (its own name, so other tests' sagas are not its business),
    in two versions: v2 drops step ``b`` and adds ``c``."""

    def __init__(self, exchange: str) -> None:
        self.name = f"trip_{uuid.uuid4().hex[:12]}"
        self.exchange = exchange
        self.v1 = SagaDefinition(name=self.name, steps=(_step("a"), _step("b")))
        self.v2 = SagaDefinition(name=self.name, steps=(_step("a"), _step("c")), version=2)
        self.saga_ids: list[uuid.UUID] = []

    def engine(self, definition: SagaDefinition, *, clock_s: float = 0) -> SagaCoordinator:
        now = datetime.now(UTC) + timedelta(seconds=clock_s)
        return SagaCoordinator(
            definitions={self.name: definition},
            defaults=DEFAULTS,
            local_handlers={},
            outbox=OutboxWriter(outbox),
            routing=Routing(commands_exchange=self.exchange),
            clock=lambda: now,
        )


@pytest.fixture
async def trip(settings: Settings, db: AsyncEngine) -> AsyncIterator[Trip]:
    found = Trip(f"{settings.namespace}.versions-{uuid.uuid4().hex[:8]}")
    yield found
    async with db.begin() as conn:
        await conn.execute(delete(outbox).where(outbox.c.exchange == found.exchange))
        await conn.execute(delete(sagas).where(sagas.c.saga_type == found.name))


async def _start(
    sessions: async_sessionmaker[AsyncSession], coordinator: SagaCoordinator, trip: Trip
) -> uuid.UUID:
    saga_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await coordinator.start(
            session, saga_type=trip.name, saga_id=saga_id, correlation_id=saga_id, data={}
        )
    return saga_id


async def _state(sessions: async_sessionmaker[AsyncSession], saga_id: uuid.UUID) -> Any:
    async with sessions() as session:
        record = await SagaRepository().get(session, saga_id)
    assert record is not None
    return record


def _reply(saga_id: uuid.UUID, state: SagaState) -> Envelope:
    return Envelope(
        message_type="Done",
        saga_id=saga_id,
        correlation_id=saga_id,
        causation_id=state.pending,
        payload={"outcome": "succeeded"},
    )


async def _answer(
    sessions: async_sessionmaker[AsyncSession], coordinator: SagaCoordinator, saga_id: uuid.UUID
) -> None:
    record = await _state(sessions, saga_id)
    async with sessions() as session, session.begin():
        await coordinator.handle_reply(session, _reply(saga_id, record.state))


async def _two_sagas(
    sessions: async_sessionmaker[AsyncSession], trip: Trip
) -> tuple[uuid.UUID, uuid.UUID]:
    """Under v1: one saga at step a, one at step b."""
    v1 = trip.engine(trip.v1)
    at_a = await _start(sessions, v1, trip)
    at_b = await _start(sessions, v1, trip)
    await _answer(sessions, v1, at_b)
    return at_a, at_b


async def test_a_saga_records_the_definition_it_started_under(
    sessions: async_sessionmaker[AsyncSession], trip: Trip
) -> None:
    saga_id = await _start(sessions, trip.engine(trip.v1), trip)

    record = await _state(sessions, saga_id)

    assert record.definition_version == 1
    assert record.definition_fingerprint == trip.v1.fingerprint
    assert record.definition_shape == trip.v1.shape


async def test_the_check_reports_the_saga_whose_step_was_removed(
    sessions: async_sessionmaker[AsyncSession], trip: Trip
) -> None:
    at_a, at_b = await _two_sagas(sessions, trip)

    async with sessions() as session:
        unchanged = await check_definitions(session, {trip.name: trip.v1})
        report = await check_definitions(session, {trip.name: trip.v2})
        gone = await check_definitions(session, {})

    assert {f.saga_id for f in unchanged.findings} & {at_a, at_b} == set()
    ours = [f for f in report.findings if f.saga_type == trip.name]
    assert [(f.saga_id, f.recorded_version, f.current_version) for f in ours] == [(at_b, 1, 2)]
    assert ours[0].reason == "step b, which it is at, was removed"
    assert f"saga {at_b} ({trip.name}, RUNNING, started under v1, current v2)" in str(report)
    assert report.changed >= 2 and not report.ok
    assert {f.saga_id for f in gone.findings} >= {at_a, at_b}
    assert {f.reason for f in gone.findings if f.saga_type == trip.name} == {
        f"saga type {trip.name} no longer exists"
    }


async def test_the_engine_moves_a_saga_that_fits_onto_the_new_definition(
    sessions: async_sessionmaker[AsyncSession], trip: Trip
) -> None:
    at_a, _ = await _two_sagas(sessions, trip)

    await _answer(sessions, trip.engine(trip.v2), at_a)

    record = await _state(sessions, at_a)
    assert record.definition_version == 2
    assert record.definition_fingerprint == trip.v2.fingerprint
    assert [s.name for s in record.state.steps] == ["a", "c"]
    assert record.state.current_step == "c"
    async with sessions() as session:
        history = await SagaRepository().history(session, at_a)
    assert (history[-1].kind, history[-1].message_type) == (HistoryKind.COMMAND_SENT, "C")


async def test_a_stale_reply_moves_the_saga_with_its_steps_realigned(
    sessions: async_sessionmaker[AsyncSession], trip: Trip
) -> None:
    # The saga at a fits v2; the first message under v2 is a late reply, which changes
    # no state, yet the saga's recorded definition and its steps move together.
    at_a, _ = await _two_sagas(sessions, trip)
    before = await _state(sessions, at_a)
    late = Envelope(
        message_type="Done",
        saga_id=at_a,
        correlation_id=at_a,
        causation_id=uuid.uuid4(),
        payload={"outcome": "succeeded"},
    )

    async with sessions() as session, session.begin():
        await trip.engine(trip.v2).handle_reply(session, late)

    record = await _state(sessions, at_a)
    assert record.definition_fingerprint == trip.v2.fingerprint
    assert [s.name for s in record.state.steps] == ["a", "c"]
    assert record.state.pending == before.state.pending
    await _answer(sessions, trip.engine(trip.v2), at_a)
    assert (await _state(sessions, at_a)).state.current_step == "c"


async def test_a_reply_to_a_finished_saga_is_stale_whatever_its_definition_became(
    sessions: async_sessionmaker[AsyncSession], trip: Trip
) -> None:
    v1 = trip.engine(trip.v1)
    saga_id = await _start(sessions, v1, trip)
    await _answer(sessions, v1, saga_id)
    last = await _state(sessions, saga_id)
    await _answer(sessions, v1, saga_id)
    assert (await _state(sessions, saga_id)).state.status is SagaStatus.COMPLETED

    # Under a definition without step b (which this saga ran), a duplicate reply is
    # recorded as stale, not dead-lettered as a definition change.
    async with sessions() as session, session.begin():
        await trip.engine(trip.v2).handle_reply(session, _reply(saga_id, last.state))

    async with sessions() as session:
        history = await SagaRepository().history(session, saga_id)
    assert history[-1].kind is HistoryKind.STALE_REPLY
    assert (await _state(sessions, saga_id)).definition_fingerprint == trip.v1.fingerprint


async def test_the_engine_refuses_a_saga_whose_step_was_removed(
    sessions: async_sessionmaker[AsyncSession], trip: Trip
) -> None:
    _, at_b = await _two_sagas(sessions, trip)
    before = await _state(sessions, at_b)
    # Past the step's deadline, so the sweeper would wake it.
    v2 = trip.engine(trip.v2, clock_s=(DEFAULTS.timeout_s or 0) + 5)

    with pytest.raises(Unprocessable) as refused:
        async with sessions() as session, session.begin():
            await v2.handle_reply(session, _reply(at_b, before.state))
    assert refused.value.reason == "definition_changed"
    with pytest.raises(InvalidRequest, match="step b, which it is at, was removed"):
        async with sessions() as session, session.begin():
            await v2.retry(session, at_b, actor="test")
    async with sessions() as session, session.begin():
        await v2.wake(session, at_b)

    after = await _state(sessions, at_b)
    assert after.state.status is SagaStatus.RUNNING
    assert after.state.steps == before.state.steps
    assert after.state.pending == before.state.pending
    assert after.definition_fingerprint == trip.v1.fingerprint
    # Not looked at again at every sweep.
    assert after.state.wake_at > before.state.wake_at + timedelta(minutes=30)
    async with sessions() as session:
        history = await SagaRepository().history(session, at_b)
        due = await session.scalar(select(sagas.c.wake_at).where(sagas.c.id == at_b))
    assert history[-1].kind is HistoryKind.DEFINITION_REFUSED
    assert history[-1].detail == "not driven: step b, which it is at, was removed"
    assert due == after.state.wake_at


async def test_start_up_reports_and_the_command_names_what_cannot_finish(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], trip: Trip
) -> None:
    # The trip's saga type is not in the order application: under it, neither can finish.
    at_a, at_b = await _two_sagas(sessions, trip)

    with captured_log_events("sagaway.definition_report") as events:
        report = await report_definitions(sessions, order_app)

    warned = {e.get("saga_id") for e in events if e.get("reason")}
    assert {str(at_a), str(at_b)} <= warned
    assert {f.saga_id for f in report.findings} >= {at_a, at_b}

    env = {**os.environ, "SAGAWAY_DATABASE_URL": settings.database_url}
    env.pop("SAGAWAY_APP", None)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sagaway", "sagas", "check-definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"saga {at_b} ({trip.name}" in result.stdout
    assert f"saga type {trip.name} no longer exists" in result.stdout
