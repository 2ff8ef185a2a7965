"""What every long-running component shares: signals, broker start-up, teardown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from sagaway.metrics_server import Readiness, ReadyState
from sagaway.outbox.amqp import connect, declare
from sagaway.outbox.cluster_connection import ClusterConnection
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.errors import BrokerUnavailable
from sagaway.outbox.handoff import Handoff
from sagaway.outbox.health import Health
from sagaway.outbox.probes import PROBE_TIMEOUT_S, database_problem
from sagaway.outbox.publisher import AioPikaPublisher
from sagaway.outbox.settings import Settings, redact_url
from sagaway.wiring import build_topology

log = structlog.get_logger(__name__)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so work can finish instead of dying mid-way."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)
    return stop


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("stopping", signal=sig.name)
    stop.set()


@dataclass(frozen=True, slots=True)
class Resources:
    """The connections one component process holds."""

    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: ClusterConnection


async def connect_broker(settings: Settings, *, name: str) -> ClusterConnection:
    """Connect to a node of RabbitMQ, waiting with backoff while none answers, and
    declare the topology; the connection declares it again whenever it reconnects
    (to the same node or another), in case the cluster came back without it."""
    topology = build_topology(settings)

    async def redeclare(channel: AbstractChannel) -> None:
        await declare(channel, topology)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(BrokerUnavailable),
        wait=wait_exponential(multiplier=0.5, max=10),
        before_sleep=lambda state: log.warning(
            "rabbitmq unreachable, retrying",
            url=redact_url(settings.amqp_url),
            attempt=state.attempt_number,
        ),
        reraise=True,
    ):
        with attempt:
            connection = await connect(settings.amqp_url, name=name, redeclare=redeclare)
    channel = await connection.channel()
    await declare(channel, topology)
    await channel.close()
    log.info("connected to rabbitmq", node=connection.node)
    return connection


@asynccontextmanager
async def resources(
    settings: Settings, *, name: str, pool_size: int | None = None
) -> AsyncIterator[Resources]:
    """Open the database engine and the broker connection; close both on the way out."""
    db = create_engine(settings.database_url, pool_size=pool_size or settings.db_pool_size)
    broker = await connect_broker(settings, name=name)
    try:
        yield Resources(db=db, sessions=session_factory(db), broker=broker)
    finally:
        await broker.close()
        await db.dispose()


def readiness(res: Resources, health: Health | None = None) -> Readiness:
    """The component's ``/readyz`` check, called from the probe server's thread.

    PostgreSQL is asked live (``SELECT 1`` on the component's own engine, run on its
    event loop); RabbitMQ by the state of the component's robust connection, which also
    names the node it is on; ``health`` adds what the component's own loop last ran into.
    """
    loop = asyncio.get_running_loop()

    def check() -> ReadyState:
        problems = health.problems() if health is not None else {}
        node = res.broker.node
        if node is None:
            problems.setdefault("rabbitmq", "connection lost, reconnecting")
        try:
            db = asyncio.run_coroutine_threadsafe(database_problem(res.db), loop).result(
                timeout=PROBE_TIMEOUT_S + 1
            )
        except Exception as exc:  # the loop is stuck or shutting down
            db = f"no answer: {type(exc).__name__}"
        if db is not None:
            problems.setdefault("postgres", db.removeprefix("postgres: "))
        return ReadyState(problems=problems, rabbitmq_node=node)

    return check


def handoff(settings: Settings, res: Resources) -> Handoff | None:
    """What lets a consumer publish the rows it commits itself (None when switched off)."""
    if not settings.handoff:
        return None
    return Handoff(
        engine=res.db,
        publisher=AioPikaPublisher(
            res.broker,
            timeout_s=settings.publish_timeout_s,
            max_message_bytes=settings.max_message_bytes,
        ),
        lease_s=settings.handoff_lease_s,
    )
