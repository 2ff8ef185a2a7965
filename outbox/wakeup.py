"""Wake-ups from PostgreSQL: LISTEN on a dedicated connection that reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

CHANNEL = "sagaway_outbox"
"""The channel the outbox tables' insert trigger notifies (see migration 0004)."""

Connect = Callable[[], Awaitable[Any]]
"""Opens a raw asyncpg connection."""


class Wakeup:
    """An event set whenever a transaction that notifies ``channel`` commits (by
    default: one that wrote outbox rows).

    ``listening`` says whether notifications are arriving; while they are not (the
    connection is down), callers poll at their short interval instead.
    """

    def __init__(self, connect: Connect, *, channel: str = CHANNEL) -> None:
        self._connect = connect
        self._channel = channel
        self._event = asyncio.Event()
        self._lost = asyncio.Event()
        self._dirty: set[str] = set()
        self._everything = True
        self.listening = False

    def clear(self) -> None:
        """Forget wake-ups seen so far (call before looking for work)."""
        self._event.clear()

    def take(self) -> set[str] | None:
        """The payloads (outbox schemas) notified since the last call, or None when
        anything may have changed unseen (just (re)connected): look everywhere."""
        if self._everything:
            self._everything = False
            self._dirty.clear()
            return None
        dirty, self._dirty = self._dirty, set()
        return dirty

    async def wait(self) -> None:
        """Until the next notification."""
        await self._event.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a LISTEN connection open until ``stop``; reconnect with backoff."""
        backoff = 0.1
        while not stop.is_set():
            connection: Any = None
            try:
                connection = await self._connect()
                self._lost.clear()
                connection.add_termination_listener(lambda _: self._lost.set())
                await connection.add_listener(self._channel, self._on_notify)
                self.listening = True
                backoff = 0.1
                log.info("listening for notifications", channel=self._channel)
                # A row committed while we were not listening gets no notification:
                # wake the relay once so it looks everywhere.
                self._everything = True
                self._event.set()
                await first_completed(stop.wait(), self._lost.wait())
            except Exception as exc:
                log.warning(
                    "notifications unavailable, polling instead",
                    channel=self._channel,
                    error=type(exc).__name__,
                    retry_in_s=backoff,
                )
                await first_completed(stop.wait(), asyncio.sleep(backoff))
                backoff = min(backoff * 2, 5.0)
            finally:
                self.listening = False
                if connection is not None and not connection.is_closed():
                    try:
                        await asyncio.wait_for(connection.close(), timeout=2)
                    except Exception:
                        connection.terminate()

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._dirty.add(payload)
        self._event.set()


async def first_completed(*aws: Awaitable[Any]) -> None:
    """Wait until one of ``aws`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
