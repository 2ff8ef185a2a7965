"""Fixtures every tier shares: a database and a broker namespace of this run's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.logging import configure_logging
from sagaway.migrate import migrate
from sagaway.outbox.amqp import declare
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.settings import Settings
from sagaway.wiring import build_topology
from tests.private_postgres import PrivatePostgres
from tests.rabbit_cluster import ClusterUnavailable, RabbitCluster
from tests.support import delete_topology, drop_database, isolated_settings, new_run_id

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, from the folder it lives in."""
    for item in items:
        tier = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def run_id() -> str:
    """Names this run's database and queues."""
    return new_run_id()


@pytest.fixture(scope="session")
def settings(run_id: str) -> Iterator[Settings]:
    """Settings pointing at this run's own database and namespace."""
    configure_logging(level="WARNING", fmt="console")
    yield isolated_settings(run_id)


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> AsyncIterator[Settings]:
    """This run's database, created and migrated; dropped when the run ends."""
    await migrate(settings)
    yield settings
    await drop_database(settings)


@pytest.fixture(scope="session")
async def db(migrated: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on this run's database."""
    engine = create_engine(migrated.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(db: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on this run's database."""
    return session_factory(db)


@pytest.fixture(scope="session")
async def broker(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    """A connection with this run's topology declared; its queues are deleted at the end.

    A plain connection, not a robust one: after a test restarts RabbitMQ a robust one
    would try to restore every queue the tests declared and deleted since.
    """
    connection = await aio_pika.connect(settings.amqp_url)
    topology = build_topology(settings)
    channel = await connection.channel()
    await declare(channel, topology)
    yield connection  # type: ignore[misc]
    if not connection.is_closed:
        await connection.close()
    await delete_topology(settings)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this run's own, for tests that crash, stop or restart it
    (never the machine's shared one). Created on first use, removed at the end of the
    run. A test that takes it down starts it again before it ends (``ensure_running``),
    even when it fails, so the next test finds it up."""
    server = PrivatePostgres.create()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
async def rabbit_cluster(run_id: str) -> AsyncIterator[RabbitCluster]:
    """Three extra RabbitMQ nodes of this machine's installation, clustered together
    (never with the machine's main broker); killed and deleted when the run ends."""
    try:
        cluster = RabbitCluster(run=run_id)
    except ClusterUnavailable as exc:
        pytest.skip(f"cannot run RabbitMQ nodes of the tests' own: {exc}")
    try:
        await cluster.create()
        yield cluster
    finally:
        await cluster.destroy()


@pytest.fixture
async def cluster(rabbit_cluster: RabbitCluster) -> AsyncIterator[RabbitCluster]:
    """The test cluster, every node running again after the test whatever it stopped."""
    yield rabbit_cluster
    stopped = [node for node in rabbit_cluster.nodes if not node.running]
    if stopped:
        await rabbit_cluster.start(*stopped)
        await rabbit_cluster.wait_clustered()
