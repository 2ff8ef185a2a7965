"""Workers keep the fault switches in memory and reload them when PostgreSQL says so.

``FaultFlags`` runs over a real ``Wakeup`` listening on ``sagaway_faults`` (the trigger
of migration 0008 notifies it); switches are committed from other sessions, as the
admin API does. Each test switches a participant name of its own, so no worker of
another test is put into an outage.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import delete, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.outbox.database import create_engine, raw_connect, session_factory
from sagaway.outbox.settings import Settings
from sagaway.outbox.transient import is_transient
from sagaway.outbox.wakeup import Wakeup
from sagaway.services.ops.faults import FAULTS_CHANNEL, FaultFlags, FaultMode, set_mode
from sagaway.services.ops.tables import faults
from tests.support import wait_for


@dataclass
class Worker:
    """What a worker process holds: its own engine (whose statements are counted), a
    ``Wakeup`` on the faults channel (not started until ``listen``) and the flags."""

    sessions: async_sessionmaker[AsyncSession]
    wakeup: Wakeup
    flags: FaultFlags
    # The LISTEN connections the Wakeup opened, newest last.
    listeners: list[Any]
    statements: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    task: asyncio.Task[None] | None = field(default=None, init=False)

    async def mode(self, participant: str) -> FaultMode:
        """The mode as a command handler would ask for it: in a transaction of its own."""
        async with self.sessions() as session, session.begin():
            return await self.flags.mode(session, participant)

    async def listen(self) -> None:
        """Start the LISTEN connection and wait until notifications arrive."""
        self.stop.clear()
        self.task = asyncio.create_task(self.wakeup.run(self.stop))

        async def listening() -> bool:
            return self.wakeup.listening

        await wait_for(listening, what="LISTEN on the faults channel")

    async def stop_listening(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
            self.task = None


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    engine = create_engine(settings.database_url)
    listeners: list[Any] = []

    async def connect() -> Any:
        connection = await raw_connect(settings.database_url)
        listeners.append(connection)
        return connection

    wakeup = Wakeup(connect, channel=FAULTS_CHANNEL)
    worker = Worker(
        sessions=session_factory(engine),
        wakeup=wakeup,
        flags=FaultFlags(wakeup),
        listeners=listeners,
    )

    def counted(*_: object) -> None:
        worker.statements += 1

    event.listen(engine.sync_engine, "before_cursor_execute", counted)
    yield worker
    await worker.stop_listening()
    await engine.dispose()


@pytest.fixture
async def participant(db: AsyncEngine) -> AsyncIterator[str]:
    """A participant name of this test; its switch is removed afterwards."""
    name = f"ff-{uuid.uuid4().hex[:12]}"
    yield name
    async with db.begin() as conn:
        await conn.execute(delete(faults).where(faults.c.participant == name))


async def switch(
    sessions: async_sessionmaker[AsyncSession], participant: str, mode: FaultMode
) -> None:
    """An operator's switch, committed in a session of its own."""
    async with sessions() as session, session.begin():
        await set_mode(session, participant, mode)


async def becomes(worker: Worker, participant: str, mode: FaultMode) -> None:
    async def current() -> FaultMode:
        return await worker.mode(participant)

    await wait_for(current, until=lambda m: m is mode, within=10, what=f"mode {mode}")


async def test_the_mode_follows_switches_committed_elsewhere(
    worker: Worker, participant: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await worker.listen()
    assert await worker.mode(participant) is FaultMode.OK

    await switch(sessions, participant, FaultMode.UNAVAILABLE)
    await becomes(worker, participant, FaultMode.UNAVAILABLE)
    await switch(sessions, participant, FaultMode.OK)
    await becomes(worker, participant, FaultMode.OK)
    await switch(sessions, participant, FaultMode.UNAVAILABLE)
    await becomes(worker, participant, FaultMode.UNAVAILABLE)


async def test_while_nothing_changes_the_switches_are_answered_from_memory(
    worker: Worker, participant: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await worker.listen()
    assert await worker.mode(participant) is FaultMode.OK  # loads the switches
    before = worker.statements
    for _ in range(10):
        assert await worker.mode(participant) is FaultMode.OK
    assert worker.statements == before  # not one query

    await switch(sessions, participant, FaultMode.UNAVAILABLE)
    await becomes(worker, participant, FaultMode.UNAVAILABLE)
    before = worker.statements
    assert await worker.mode(participant) is FaultMode.UNAVAILABLE
    assert worker.statements == before  # reloaded once, then from memory again


async def test_without_a_listener_every_call_reads_the_table(
    worker: Worker, participant: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert not worker.wakeup.listening  # never started
    assert await worker.mode(participant) is FaultMode.OK
    await switch(sessions, participant, FaultMode.UNAVAILABLE)
    assert await worker.mode(participant) is FaultMode.UNAVAILABLE  # at once, no waiting
    await switch(sessions, participant, FaultMode.OK)
    assert await worker.mode(participant) is FaultMode.OK
    before = worker.statements
    await worker.mode(participant)
    assert worker.statements == before + 1


async def test_once_the_listener_stops_a_switch_is_seen_at_once(
    worker: Worker, participant: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await worker.listen()
    assert await worker.mode(participant) is FaultMode.OK  # in memory now
    await worker.stop_listening()
    assert not worker.wakeup.listening

    await switch(sessions, participant, FaultMode.UNAVAILABLE)
    assert await worker.mode(participant) is FaultMode.UNAVAILABLE

    # Listening again, it starts from the table, not from what it held before.
    await worker.listen()
    assert await worker.mode(participant) is FaultMode.UNAVAILABLE
    await switch(sessions, participant, FaultMode.OK)
    await becomes(worker, participant, FaultMode.OK)


async def test_a_switch_made_while_the_listen_connection_was_cut_is_not_missed(
    worker: Worker,
    participant: str,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncEngine,
) -> None:
    await worker.listen()
    assert await worker.mode(participant) is FaultMode.OK  # in memory now
    [listener] = worker.listeners

    # The server drops the LISTEN connection (a restart, an idle timeout, a proxy)...
    async with db.begin() as conn:
        await conn.execute(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": listener.get_server_pid()}
        )
    # ...and the switch is flipped before the worker is listening again: no
    # notification of it will ever arrive.
    await switch(sessions, participant, FaultMode.UNAVAILABLE)
    await becomes(worker, participant, FaultMode.UNAVAILABLE)

    async def reconnected() -> bool:
        return len(worker.listeners) == 2 and worker.wakeup.listening

    await wait_for(reconnected, what="LISTEN connection re-opened")
    await switch(sessions, participant, FaultMode.OK)
    await becomes(worker, participant, FaultMode.OK)


async def test_a_reload_that_fails_is_tried_again_on_the_next_call(
    worker: Worker,
    participant: str,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncEngine,
) -> None:
    await worker.listen()
    assert await worker.mode(participant) is FaultMode.OK  # in memory now

    worker.wakeup.clear()
    await switch(sessions, participant, FaultMode.UNAVAILABLE)
    await asyncio.wait_for(worker.wakeup.wait(), timeout=10)  # the notification is in

    # The command that would reload the switches loses its database connection (the
    # consumer retries such a batch in a new transaction).
    async with worker.sessions() as session:
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        async with db.begin() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as lost:
            await worker.flags.mode(session, participant)
        assert is_transient(lost.value)

    # The retry must see the switch: no second notification is coming for it.
    assert await worker.mode(participant) is FaultMode.UNAVAILABLE
