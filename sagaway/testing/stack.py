"""The real stack for one application's tests: PostgreSQL, RabbitMQ, the relay, the
orchestrator and every participant's worker, in a database and a broker namespace of
its own, created before and removed after.

The harness (:mod:`sagaway.testing.harness`) tests a saga's paths; this tests that the
application really runs: its migrations, its handlers against its tables, its local
steps, the messages on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.application_loader import load_application
from sagaway.migrate import migrate
from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.repository import SagaRepository
from sagaway.outbox.database import create_engine, raw_connect, session_factory
from sagaway.outbox.settings import Settings
from sagaway.runners.backend import run_backend
from sagaway.services.ops.faults import FaultMode, set_mode
from sagaway.starting import start_saga

STOP_TIMEOUT_S = 30.0
"""How long the backend may take to finish what it holds when the stack stops."""


class StackError(AssertionError):
    """The stack stopped, or a saga did not end in time."""


@dataclass(frozen=True, slots=True)
class SagaStack:
    """One running application, as a test drives it.

    Attributes:
        settings: the stack's settings (its database, its namespace, its application).
        app: the application it runs.
        sessions: sessions on the stack's database (for seeding and checking a
            participant's tables).
    """

    settings: Settings
    app: SagaApp
    sessions: async_sessionmaker[AsyncSession]
    backend: asyncio.Task[None]

    async def start(
        self, saga_type: str, data: Mapping[str, Any], *, saga_id: uuid.UUID | None = None
    ) -> uuid.UUID:
        """Start a saga in a transaction of its own (``sagaway.start_saga``); its first
        command leaves once that commits. Returns the saga's id."""
        self._check_running()
        async with self.sessions() as session, session.begin():
            return await start_saga(
                session, saga_type, data, app=self.app, saga_id=saga_id, settings=self.settings
            )

    async def saga(self, saga_id: uuid.UUID) -> dict[str, Any]:
        """The saga as it is now: ``status``, ``steps`` (name → status), ``data`` (with
        the steps' outputs), ``failure_reason``."""
        async with self.sessions() as session:
            record = await SagaRepository().get(session, saga_id)
        if record is None:
            raise StackError(f"no saga {saga_id}")
        return {
            "status": record.state.status.value,
            "steps": {s.name: s.status.value for s in record.state.steps},
            "data": dict(record.data),
            "failure_reason": record.state.failure_reason,
        }

    async def wait(
        self, saga_id: uuid.UUID, timeout_s: float = 30.0, *, interval_s: float = 0.05
    ) -> dict[str, Any]:
        """Wait until the saga is COMPLETED, COMPENSATED or FAILED; returns it (see
        :meth:`saga`).

        Raises:
            StackError: it did not end within ``timeout_s`` (with where it is), or the
                backend stopped meanwhile (with why).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            saga = await self.saga(saga_id)
            if saga["status"] in ("COMPLETED", "COMPENSATED", "FAILED"):
                return saga
            left = deadline - time.monotonic()
            if left <= 0:
                raise StackError(f"saga {saga_id} did not end within {timeout_s:g}s: {saga}")
            # Waits on the backend too, so that a backend that crashed fails the test now
            # with its own error rather than after the timeout.
            await asyncio.wait({self.backend}, timeout=min(interval_s, left))
            self._check_running()

    async def set_fault(self, participant: str, mode: str) -> None:
        """Switch a participant's simulated outage: ``"unavailable"`` (it answers every
        command with a technical failure, which the orchestrator retries) or ``"ok"``."""
        self.app.participant(participant)  # a KeyError naming those that exist
        async with self.sessions() as session, session.begin():
            await set_mode(session, participant, FaultMode(mode))

    async def seed(self) -> str:
        """Run the application's seed (``sagaway seed``); says what it added."""
        if self.app.seed is None:
            return "nothing to seed"
        async with self.sessions() as session, session.begin():
            connection = await session.connection()
            return await self.app.seed(connection)

    def _check_running(self) -> None:
        if self.backend.done():
            error = None if self.backend.cancelled() else self.backend.exception()
            raise StackError(f"the backend stopped: {error!r}") from error


OWN = ("database_url", "namespace")
"""Settings a stack always chooses itself: it drops that database and deletes that
namespace's queues when it stops, so they must never be a team's real ones."""


def stack_settings(app_spec: str, *, run_id: str | None = None, **overrides: Any) -> Settings:
    """Settings of a new stack: the servers of ``SAGAWAY_DATABASE_URL`` and
    ``SAGAWAY_AMQP_URL`` (or their defaults), a database ``sagaway_test_<run>`` and a
    namespace ``test-<run>`` of its own.

    Raises:
        StackError: ``overrides`` names the database or the namespace.
    """
    chosen = sorted(set(OWN) & set(overrides))
    if chosen:
        raise StackError(
            f"a test stack chooses its own {' and '.join(chosen)}: it drops that database "
            "and deletes that namespace's queues when it stops"
        )
    run = run_id or uuid.uuid4().hex[:10]
    base = Settings()
    url = make_url(base.database_url).set(database=f"sagaway_test_{run}")
    values: dict[str, Any] = {
        "app": app_spec,
        "database_url": url.render_as_string(hide_password=False),
        "amqp_url": base.amqp_url,
        "namespace": f"test-{run}",
        "metrics_port": None,
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_stack(app_spec: str, **overrides: Any) -> AsyncIterator[SagaStack]:
    """Run the application ``app_spec`` (``module:attribute``) until the block ends,
    then remove its database and its queues and exchanges.

    Args:
        app_spec: the application, as ``--app`` takes it.
        overrides: settings to change (``step_timeout_s=2.0``); the database and the
            namespace are always the stack's own.
    """
    settings = stack_settings(app_spec, **overrides)
    app = load_application(app_spec)
    try:
        await migrate(settings, app)
        engine = create_engine(settings.database_url, pool_size=2)
        stop = asyncio.Event()
        backend = asyncio.create_task(run_backend(settings, stop=stop), name="sagaway-backend")
        try:
            yield SagaStack(
                settings=settings, app=app, sessions=session_factory(engine), backend=backend
            )
        finally:
            stop.set()
            try:
                await asyncio.wait_for(backend, STOP_TIMEOUT_S)
            finally:
                await engine.dispose()
    finally:
        await drop_database(settings)
        await delete_topology(settings, app)


async def drop_database(settings: Settings) -> None:
    """Drop the database ``settings`` names, whoever is still connected to it."""
    name = make_url(settings.database_url).database
    conn = await raw_connect(settings.database_url, database="postgres")
    try:
        quoted = '"' + str(name).replace('"', '""') + '"'
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()


async def delete_topology(settings: Settings, app: SagaApp) -> None:
    """Delete the namespace's queues (with their dead-letter queues) and exchanges, on a
    connection of its own (the broker may have been restarted meanwhile)."""
    topology = app.topology_for(settings)
    connection = await aio_pika.connect(settings.amqp_nodes[0])
    try:
        channel = await connection.channel()
        for spec in topology.queues:
            await channel.queue_delete(spec.name)
            await channel.queue_delete(topology.dead_letter_queue(spec.name))
        for name in (*topology.exchanges, topology.dead_letter_exchange):
            await channel.exchange_delete(name)
    finally:
        await connection.close()
