"""Migrations 0010 and 0011 on rows written by the version before them.

History written as sentences at revision 0009 becomes typed fields that render the
same sentences; the downgrade gives the sentences back. Sagas started before 0011 are
given the order saga's current definition.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sagaway.migrate import alembic_config
from sagaway.orchestrator.repository import SagaRepository
from sagaway.outbox.database import create_engine, raw_connect
from sagaway.outbox.settings import Settings
from sagaway.services.orders.saga import ORDER_FULFILLMENT
from tests.history_samples import SAMPLES

pytestmark = pytest.mark.integration

ORDER_SAGA = uuid.UUID(int=1)
OTHER_SAGA = uuid.UUID(int=2)


@pytest.fixture
async def old_db(settings: Settings, run_id: str) -> AsyncIterator[AsyncEngine]:
    """An empty database of its own (the migrations run down and up in it)."""
    name = f"sagaway_test_{run_id}_history"
    conn = await raw_connect(settings.database_url, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(settings.database_url).set(database=name)
    engine = create_engine(url.render_as_string(hide_password=False), pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()
        conn = await raw_connect(settings.database_url, database="postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _alembic(engine: AsyncEngine, verb: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        getattr(command, verb)(cfg, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def _write_old_rows(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for saga_id, saga_type in ((ORDER_SAGA, "order_fulfillment"), (OTHER_SAGA, "trip")):
            await conn.execute(
                text(
                    "INSERT INTO sagas.sagas (id, saga_type, correlation_id, status, phase,"
                    " cursor, attempt, steps, data)"
                    " VALUES (:id, :type, :id, 'RUNNING', 'forward', 0, 1, '[]', '{}')"
                ),
                {"id": saga_id, "type": saga_type},
            )
        for kind, step, message_id, sentence, _ in SAMPLES:
            await conn.execute(
                text(
                    "INSERT INTO sagas.saga_events (saga_id, kind, step, message_id, detail)"
                    " VALUES (:saga, :kind, :step, :message_id, :detail)"
                ),
                {
                    "saga": ORDER_SAGA,
                    "kind": kind,
                    "step": step,
                    "message_id": message_id,
                    "detail": sentence,
                },
            )


async def _rows(engine: AsyncEngine, query: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(query)))


async def test_old_sentences_become_typed_fields_that_render_the_same(
    old_db: AsyncEngine,
) -> None:
    await _alembic(old_db, "upgrade", "0009")
    await _write_old_rows(old_db)

    await _alembic(old_db, "upgrade", "head")

    async with AsyncSession(old_db) as session:
        history = await SagaRepository().history(session, ORDER_SAGA)
    for row, (_, _, _, sentence, entry) in zip(history, SAMPLES, strict=True):
        typed = {f: getattr(row, f) for f in entry.__dataclass_fields__}
        assert typed == {f: getattr(entry, f) for f in entry.__dataclass_fields__}, sentence
        assert row.detail == sentence


async def test_the_downgrade_gives_the_sentences_back(old_db: AsyncEngine) -> None:
    await _alembic(old_db, "upgrade", "0009")
    await _write_old_rows(old_db)
    await _alembic(old_db, "upgrade", "head")

    await _alembic(old_db, "downgrade", "0009")

    rows = await _rows(old_db, "SELECT kind, detail FROM sagas.saga_events ORDER BY id")
    assert [(r.kind, r.detail) for r in rows] == [(s[0], s[3]) for s in SAMPLES]


async def test_sagas_started_before_get_the_order_sagas_definition(old_db: AsyncEngine) -> None:
    await _alembic(old_db, "upgrade", "0009")
    await _write_old_rows(old_db)

    await _alembic(old_db, "upgrade", "head")

    rows = await _rows(
        old_db,
        "SELECT id, definition_version, definition_fingerprint, definition_shape"
        " FROM sagas.sagas ORDER BY id",
    )
    by_id = {r.id: r for r in rows}
    order = by_id[ORDER_SAGA]
    # The migration froze the order saga's values: they must be what the code computes.
    assert order.definition_version == ORDER_FULFILLMENT.version
    assert order.definition_fingerprint == ORDER_FULFILLMENT.fingerprint
    shape = order.definition_shape
    assert tuple(json.loads(shape) if isinstance(shape, str) else shape) == ORDER_FULFILLMENT.shape
    other = by_id[OTHER_SAGA]
    assert (other.definition_version, other.definition_fingerprint) == (None, None)
