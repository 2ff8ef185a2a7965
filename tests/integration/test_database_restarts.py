"""The engine and the LISTEN connections across a real PostgreSQL crash.

On the run's private server (``private_postgres``), restarted in immediate mode: every
client connection is closed without a goodbye and the server recovers from its WAL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.outbox.database import create_engine, raw_connect
from sagaway.outbox.wakeup import Wakeup
from sagaway.services.api.saga_watch import SagaEndWatcher
from tests.private_postgres import PrivatePostgres
from tests.support import wait_for

POOL = 3


@pytest.fixture
async def server(private_postgres: PrivatePostgres) -> AsyncIterator[PrivatePostgres]:
    await asyncio.to_thread(private_postgres.ensure_running)
    yield private_postgres
    await asyncio.to_thread(private_postgres.ensure_running)


@pytest.fixture
async def engine(server: PrivatePostgres) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(server.url("postgres"), pool_size=POOL)
    yield engine
    await engine.dispose()


async def _backend_pids(engine: AsyncEngine) -> list[int]:
    """The server process of each pooled connection, all checked out at once."""

    async def one() -> int:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await asyncio.sleep(0.05)  # hold it, so the others take other connections
            return int(pid)

    return list(await asyncio.gather(*(one() for _ in range(POOL))))


async def test_pooled_connections_a_crash_closed_are_replaced_without_an_error(
    server: PrivatePostgres, engine: AsyncEngine
) -> None:
    before = await _backend_pids(engine)
    assert len(set(before)) == POOL

    await asyncio.to_thread(server.restart_immediate)

    # Every pooled connection died with the server; none of them fails a statement:
    # each is replaced when it is checked out.
    after = await _backend_pids(engine)
    assert len(set(after)) == POOL
    assert not set(after) & set(before)
    assert server.recoveries() >= 1


class _Listener:
    """Counts the LISTEN connections a listener opens."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[Any] = []

    async def connect(self) -> Any:
        connection = await raw_connect(self.url)
        self.opened.append(connection)
        return connection


async def _notify(engine: AsyncEngine, channel: str, payload: str) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})
        await conn.commit()


class _Listens(Protocol):
    """A component with a LISTEN connection of its own."""

    listening: bool

    async def run(self, stop: asyncio.Event) -> None: ...


@asynccontextmanager
async def _crashed_under(
    server: PrivatePostgres, listener: _Listener, component: _Listens
) -> AsyncIterator[None]:
    """``component`` runs and listens; the server crashes; it listens again on a new
    connection by the time the block starts. It stops when the block ends."""
    stop = asyncio.Event()
    running = asyncio.create_task(component.run(stop))
    try:
        await wait_for(lambda: asyncio.sleep(0, component.listening), what="listening")
        await asyncio.to_thread(server.restart_immediate)

        async def again() -> bool:
            return len(listener.opened) >= 2 and component.listening

        await wait_for(again, within=15, what="listening on a new connection")
        yield
    finally:
        stop.set()
        await running


async def test_an_outbox_wakeup_listens_again_after_a_crash(
    server: PrivatePostgres, engine: AsyncEngine
) -> None:
    listener = _Listener(server.url("postgres"))
    wakeup = Wakeup(listener.connect, channel="sagaway_test_wakeup")

    async with _crashed_under(server, listener, wakeup):
        wakeup.take()  # the reconnect's "look everywhere"
        wakeup.clear()
        await _notify(engine, "sagaway_test_wakeup", "sagas")
        await asyncio.wait_for(wakeup.wait(), timeout=10)
        assert wakeup.take() == {"sagas"}


async def test_long_polls_are_woken_again_after_a_crash(
    server: PrivatePostgres, engine: AsyncEngine
) -> None:
    listener = _Listener(server.url("postgres"))
    watcher = SagaEndWatcher(listener.connect, channel="sagaway_test_ended")
    saga_id = uuid.uuid4()
    reads = 0
    ended = False

    async def read() -> bool:
        nonlocal reads
        reads += 1
        return ended

    async with _crashed_under(server, listener, watcher):
        # A long poll sleeps until the notification of its saga's end (not re-reading
        # in between while notifications arrive): the new connection delivers it.
        waiting = asyncio.create_task(watcher.wait_until(saga_id, 20, read, lambda r: r is True))
        await wait_for(lambda: asyncio.sleep(0, reads), until=lambda n: n == 1, what="read")
        ended = True
        await _notify(engine, "sagaway_test_ended", str(saga_id))
        assert await asyncio.wait_for(waiting, timeout=10) is True
        assert reads == 2
