"""Long polls of a saga: wait for its end without asking the database while waiting.

One :class:`SagaEndWatcher` per API process keeps a dedicated ``LISTEN`` connection on
the channel that a trigger on ``sagas.sagas`` notifies with a saga's id when the saga
becomes terminal (migration 0007). A waiting request reads the saga, sleeps until the
notification for its saga (or its deadline), and reads it once more. While the ``LISTEN``
connection is down (not yet up, or lost and reconnecting) waiters re-read every
``fallback_poll_s`` instead, so no answer depends on the notification arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import structlog

from sagaway.outbox.wakeup import Connect, first_completed

log = structlog.get_logger(__name__)

CHANNEL = "sagaway_saga_ended"
"""The channel the ``sagas.sagas`` trigger notifies with the saga's id (migration 0007)."""
FALLBACK_POLL_S = 0.5
MAX_BACKOFF_S = 5.0

T = TypeVar("T")


class SagaEndWatcher:
    """Wakes the requests waiting for a saga when that saga ends.

    Args:
        connect: Opens the ``LISTEN`` connection (a raw asyncpg connection).
        channel: The channel the trigger notifies.
        fallback_poll_s: How often a waiter re-reads while notifications are not arriving.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        channel: str = CHANNEL,
        fallback_poll_s: float = FALLBACK_POLL_S,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._fallback_poll_s = fallback_poll_s
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._lost = asyncio.Event()
        self._closing = False
        self.listening = False

    def close(self) -> None:
        """Answer every waiter now, and every later one at once: the process is stopping,
        and a long poll should not hold up its graceful shutdown."""
        self._closing = True
        self._wake_all()

    async def wait_until(
        self,
        saga_id: uuid.UUID,
        wait_s: float,
        read: Callable[[], Awaitable[T | None]],
        done: Callable[[T], bool],
    ) -> T | None:
        """Read the saga until ``done`` says it ended or ``wait_s`` passed.

        The waiter is registered before the first read, so an end committed between that
        read and the wait still wakes it; after the deadline the saga is read once more.

        Args:
            saga_id: The saga waited for.
            wait_s: The longest wait, in seconds.
            read: Reads the saga (in a transaction of its own; None when unknown).
            done: Whether a read shows the saga terminal.

        Returns:
            The last read: terminal, or whatever the saga was at the deadline or when
            :meth:`close` was called (None when the saga does not exist).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        with self._watch(saga_id) as woken:
            result = await read()
            while result is not None and not done(result) and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                step = remaining if self.listening else min(remaining, self._fallback_poll_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), step)
                woken.clear()
                result = await read()
        return result

    @contextlib.contextmanager
    def _watch(self, saga_id: uuid.UUID) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        waiters = self._waiters.setdefault(saga_id, set())
        waiters.add(event)
        try:
            yield event
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(saga_id, None)

    def _wake(self, saga_id: uuid.UUID) -> None:
        for event in self._waiters.get(saga_id, ()):
            event.set()

    def _wake_all(self) -> None:
        # Listening just started or stopped: a notification may have been missed, and a
        # waiter sleeping until its deadline must switch to re-reading (or back).
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the ``LISTEN`` connection open until ``stop``; reconnect with backoff."""
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
                self._wake_all()
                log.info("listening for saga ends", channel=self._channel)
                await first_completed(stop.wait(), self._lost.wait())
            except Exception as exc:
                log.warning(
                    "saga end notifications unavailable, waiters re-read instead",
                    error=type(exc).__name__,
                    retry_in_s=backoff,
                )
                await first_completed(stop.wait(), asyncio.sleep(backoff))
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            finally:
                if self.listening:
                    self.listening = False
                    self._wake_all()
                if connection is not None and not connection.is_closed():
                    try:
                        await asyncio.wait_for(connection.close(), timeout=2)
                    except Exception:
                        connection.terminate()

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            saga_id = uuid.UUID(payload)
        except ValueError:
            log.warning("unexpected saga end notification", payload=payload[:100])
            return
        self._wake(saga_id)
