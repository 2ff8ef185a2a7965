"""Helpers shared by the test tiers: waiting for conditions, isolated settings."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aio_pika.abc import AbstractQueue
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from sagaway.application_loader import load_application
from sagaway.outbox.settings import Settings
from sagaway.services.order_app import order_app
from sagaway.testing import stack

T = TypeVar("T")

ADMIN_TOKEN = "test-admin-token"

# The built-in order application's tables and participants, as the tests use them.
OUTBOX_TABLES = order_app.outbox_tables
INBOX_TABLES = order_app.inbox_tables
PARTICIPANTS = order_app.participant_names


class ConditionTimeout(AssertionError):
    """A waited-for condition did not hold in time."""


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    within: float = 20.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``until(result)`` holds; fail with the last value otherwise."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = await probe()
        if until(last):
            return last
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"{what} not reached within {within}s; last value: {last!r}")
        await asyncio.sleep(interval)


def wait_until(
    condition: Callable[[], bool], *, within: float, interval: float = 0.02, what: str
) -> None:
    """Block until ``condition()`` holds (for code outside an event loop); fail after
    ``within`` seconds. The synchronous counterpart of ``wait_for``."""
    retrying = Retrying(
        retry=retry_if_result(lambda held: not held),
        stop=stop_after_delay(within),
        wait=wait_fixed(interval),
    )
    try:
        retrying(condition)
    except RetryError as exc:
        raise ConditionTimeout(f"{what} not reached within {within}s") from exc


def isolated_settings(run_id: str, **overrides: object) -> Settings:
    """Settings for one test run: its own database and broker namespace.

    The server addresses come from the usual SAGAWAY_* variables (or the defaults), so
    the tests run wherever ``sagaway`` itself would.
    """
    base = Settings()
    url = make_url(base.database_url).set(database=f"sagaway_test_{run_id}")
    values: dict[str, object] = {
        "database_url": url.render_as_string(hide_password=False),
        "amqp_url": base.amqp_url,
        "namespace": f"test-{run_id}",
        "admin_token": ADMIN_TOKEN,
        "log_format": "console",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def new_run_id() -> str:
    """A short id naming this run's database and queues (also across xdist workers)."""
    return os.environ.get("SAGAWAY_TEST_RUN_ID") or uuid.uuid4().hex[:10]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drop_database(settings: Settings) -> None:
    """Drop the database ``settings`` names, whoever is still connected to it."""
    await stack.drop_database(settings)


async def delete_topology(settings: Settings) -> None:
    """Delete the namespace's queues (with their dead-letter queues) and exchanges of the
    application ``settings`` names."""
    await stack.delete_topology(settings, load_application(settings.app))


@contextmanager
def captured_log_events(
    logger: str = "", *, level: int = logging.WARNING
) -> Iterator[list[dict[str, Any]]]:
    """The events that reach the standard library's ``logger`` (the root by default)
    at ``level`` or above while inside: structlog's as their dicts, context merged in,
    as they are rendered; other libraries' as ``{"event": message, "logger": name}``.

    sagaway's own loggers (everything under ``sagaway``) are
    let through from ``level`` while inside, whatever the run's log level.
    """
    events: list[dict[str, Any]] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if isinstance(record.msg, dict):
                events.append(dict(record.msg))
            else:
                events.append({"event": record.getMessage(), "logger": record.name})

    handler = _Keep(level=level)
    target = logging.getLogger(logger)
    ours = [logging.getLogger(name) for name in ("sagaway",)]
    levels = [o.level for o in ours]
    target.addHandler(handler)
    for own in ours:
        own.setLevel(level)
    try:
        yield events
    finally:
        target.removeHandler(handler)
        for own, previous in zip(ours, levels, strict=True):
            own.setLevel(previous)


def metric(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def take_dead_letters(queue: AbstractQueue) -> list[tuple[str | None, int]]:
    """Take every message of a dead-letter queue: its AMQP message id, and how many
    times it was dead-lettered from its source (1: on its first delivery)."""
    taken: list[tuple[str | None, int]] = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        deaths = (message.headers or {}).get("x-death")
        assert isinstance(deaths, list) and isinstance(deaths[0], dict), message.headers
        taken.append((message.message_id, int(deaths[0]["count"])))
    return taken
