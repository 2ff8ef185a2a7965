"""Long polls: woken by the saga's notification, re-reading only while not listening."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sagaway.services.api.saga_watch import CHANNEL, SagaEndWatcher
from tests.support import wait_for

pytestmark = pytest.mark.unit


class FakeConnection:
    """What the watcher uses of an asyncpg connection."""

    def __init__(self) -> None:
        self.listeners: dict[str, Callable[..., None]] = {}
        self.on_termination: list[Callable[[Any], None]] = []
        self.closed = False

    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None:
        self.listeners[channel] = callback

    def add_termination_listener(self, callback: Callable[[Any], None]) -> None:
        self.on_termination.append(callback)

    def notify(self, payload: str) -> None:
        self.listeners[CHANNEL](self, 1, CHANNEL, payload)

    def lose(self) -> None:
        self.closed = True
        for callback in self.on_termination:
            callback(self)

    def is_closed(self) -> bool:
        return self.closed

    async def close(self) -> None:
        self.closed = True

    def terminate(self) -> None:
        self.closed = True


async def fake_connect() -> FakeConnection:
    return FakeConnection()


class Saga:
    """A saga whose reads are counted."""

    def __init__(self, status: str = "RUNNING") -> None:
        self.status = status
        self.reads = 0

    async def read(self) -> str:
        self.reads += 1
        return self.status


def ended(status: str) -> bool:
    return status in ("COMPLETED", "COMPENSATED", "FAILED")


@asynccontextmanager
async def running(
    watcher: SagaEndWatcher, stop: asyncio.Event | None = None
) -> AsyncIterator[None]:
    stop = stop or asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def test_a_terminal_saga_is_answered_after_one_read() -> None:
    saga = Saga("COMPLETED")
    watcher = SagaEndWatcher(fake_connect)
    assert await watcher.wait_until(uuid.uuid4(), 30, saga.read, ended) == "COMPLETED"
    assert saga.reads == 1


async def test_the_notification_of_its_saga_wakes_a_waiter_with_no_read_in_between() -> None:
    connections: list[FakeConnection] = []

    async def connect() -> FakeConnection:
        connections.append(FakeConnection())
        return connections[-1]

    watcher = SagaEndWatcher(connect, fallback_poll_s=0.01)
    saga_id, saga = uuid.uuid4(), Saga()
    async with running(watcher):
        await wait_for(lambda: _value(watcher.listening), what="listening")
        started = time.monotonic()
        waiting = asyncio.create_task(watcher.wait_until(saga_id, 30, saga.read, ended))
        await wait_for(lambda: _value(saga.reads), until=lambda n: n == 1, what="first read")
        connections[0].notify(str(uuid.uuid4()))  # another saga's end: no read
        await asyncio.sleep(0)
        saga.status = "COMPENSATED"
        connections[0].notify(str(saga_id))
        assert await waiting == "COMPENSATED"
    assert saga.reads == 2
    assert time.monotonic() - started < 5


async def test_at_the_deadline_the_saga_is_read_once_more_and_answered_as_it_is() -> None:
    watcher = SagaEndWatcher(fake_connect)
    saga = Saga()
    async with running(watcher):
        await wait_for(lambda: _value(watcher.listening), what="listening")
        assert await watcher.wait_until(uuid.uuid4(), 0.2, saga.read, ended) == "RUNNING"
    assert saga.reads == 2


async def test_without_notifications_a_waiter_re_reads_at_the_fallback_interval() -> None:
    async def refuse() -> FakeConnection:
        raise OSError("database down")

    watcher = SagaEndWatcher(refuse, fallback_poll_s=0.01)
    saga_id, saga = uuid.uuid4(), Saga()
    async with running(watcher):
        waiting = asyncio.create_task(watcher.wait_until(saga_id, 30, saga.read, ended))
        await wait_for(lambda: _value(saga.reads), until=lambda n: n >= 3, what="re-reads")
        saga.status = "FAILED"
        assert await waiting == "FAILED"


async def test_a_lost_connection_turns_sleeping_waiters_to_re_reading() -> None:
    connections: list[FakeConnection] = []
    refuse = asyncio.Event()

    async def connect() -> FakeConnection:
        if refuse.is_set():
            raise OSError("database down")
        connections.append(FakeConnection())
        return connections[-1]

    watcher = SagaEndWatcher(connect, fallback_poll_s=0.01)
    saga_id, saga = uuid.uuid4(), Saga()
    async with running(watcher):
        await wait_for(lambda: _value(watcher.listening), what="listening")
        waiting = asyncio.create_task(watcher.wait_until(saga_id, 30, saga.read, ended))
        await wait_for(lambda: _value(saga.reads), until=lambda n: n == 1, what="first read")
        refuse.set()
        connections[0].lose()
        await wait_for(lambda: _value(saga.reads), until=lambda n: n >= 3, what="re-reads")
        saga.status = "COMPLETED"  # ends with no notification at all
        assert await waiting == "COMPLETED"
        assert not watcher.listening


async def test_an_unknown_saga_is_not_waited_for() -> None:
    watcher = SagaEndWatcher(fake_connect)
    reads = 0

    async def read() -> str | None:
        nonlocal reads
        reads += 1
        return None

    assert await watcher.wait_until(uuid.uuid4(), 30, read, ended) is None
    assert reads == 1


async def _value(value: Any) -> Any:
    return value


async def test_closing_answers_waiters_at_once_with_the_saga_as_it_is() -> None:
    watcher = SagaEndWatcher(fake_connect)
    saga_id, saga = uuid.uuid4(), Saga()
    async with running(watcher):
        await wait_for(lambda: _value(watcher.listening), what="listening")
        waiting = asyncio.create_task(watcher.wait_until(saga_id, 30, saga.read, ended))
        await wait_for(lambda: _value(saga.reads), until=lambda n: n == 1, what="first read")
        watcher.close()
        assert await asyncio.wait_for(waiting, 5) == "RUNNING"
        # A request that arrives while the server stops is answered at once too.
        later = Saga()
        assert await asyncio.wait_for(watcher.wait_until(saga_id, 30, later.read, ended), 5)
        assert later.reads == 1
