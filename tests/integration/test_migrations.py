"""Alembic head equals the declared models, and migrating is idempotent and race-safe."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sagaway import (
    Action,
    CommandContext,
    Participant,
    Reply,
    SagaApp,
    SagaDefinition,
    Step,
    Succeeded,
)
from sagaway.migrate import migrate
from sagaway.migrations.models import ALL_METADATA, SCHEMAS
from sagaway.outbox.database import create_engine, ensure_database, raw_connect
from sagaway.outbox.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _include_name(name: str | None, type_: str, _: object) -> bool:
    # The same filter as migrations/env.py (which cannot be imported outside Alembic):
    # only the services' schemas are compared, not ``public`` with alembic_version.
    if type_ == "schema":
        return name in SCHEMAS
    return True


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection=connection,
        opts={
            "include_schemas": True,
            "include_name": _include_name,
            "compare_type": True,
            "compare_server_default": True,
            "target_metadata": list(ALL_METADATA),
        },
    )
    return list(compare_metadata(context, list(ALL_METADATA)))  # type: ignore[arg-type]


_CATALOG = text(
    """
    SELECT n.nspname, c.relname, c.relkind, c.oid::bigint AS oid
      FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas)
     ORDER BY 1, 2
    """
)


async def _catalog(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """Every relation of the services' schemas with its oid (a re-created one changes)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_CATALOG, {"schemas": list(SCHEMAS)})).all()
    return [tuple(r) for r in rows]


async def _revisions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())


async def _drop_database(settings: Settings, name: str) -> None:
    conn = await raw_connect(settings.database_url, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_alembic_head_equals_models(db: AsyncEngine) -> None:
    async with db.connect() as conn:
        differences = await conn.run_sync(_differences)

    assert differences == []


async def test_the_comparison_sees_every_service_schema(db: AsyncEngine) -> None:
    # Guards the test above against comparing nothing (e.g. a filter that drops all).
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_schema = ANY(:schemas)"
            ),
            {"schemas": list(SCHEMAS)},
        )
        migrated_tables = {f"{schema}.{name}" for schema, name in rows}

    declared = {t.fullname for m in ALL_METADATA for t in m.tables.values()}
    assert declared == migrated_tables
    assert {"orders", "sagas", "inventory", "payment", "notification"} <= set(SCHEMAS)


async def test_migrating_again_is_a_no_op(migrated: Settings, db: AsyncEngine) -> None:
    before = await _catalog(db)
    revisions = await _revisions(db)

    await migrate(migrated)

    assert await _catalog(db) == before
    assert await _revisions(db) == revisions
    assert len(revisions) == 1


def _named(settings: Settings, name: str) -> Settings:
    url = make_url(settings.database_url).set(database=name)
    return settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})


@pytest.fixture
async def fresh_database(settings: Settings, run_id: str) -> AsyncIterator[Settings]:
    """Settings naming a second database that does not exist yet; dropped afterwards."""
    name = f"sagaway_test_{run_id}_concurrent"
    await _drop_database(settings, name)
    yield _named(settings, name)
    await _drop_database(settings, name)


async def _assert_at_head(settings: Settings, reference: AsyncEngine) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        assert await _revisions(engine) == await _revisions(reference)
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


async def _create_empty(settings: Settings) -> None:
    conn = await raw_connect(settings.database_url, database="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{make_url(settings.database_url).database}"')
    finally:
        await conn.close()


async def _sagaway_migrate(settings: Settings) -> tuple[int, str]:
    """Run ``python -m sagaway migrate`` as its own process, as an operator would."""
    env = {
        **os.environ,
        "SAGAWAY_DATABASE_URL": settings.database_url,
        "SAGAWAY_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sagaway",
        "migrate",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode(errors="replace")


async def test_two_concurrent_migrate_processes_both_succeed(
    fresh_database: Settings, db: AsyncEngine
) -> None:
    # Two `sagaway migrate` at once against a database with no schema yet: the
    # advisory lock in migrations/env.py makes the second wait, then find head.
    await _create_empty(fresh_database)

    results = await asyncio.gather(
        _sagaway_migrate(fresh_database), _sagaway_migrate(fresh_database)
    )

    assert [code for code, _ in results] == [0, 0], results
    await _assert_at_head(fresh_database, db)


async def test_two_concurrent_migrate_calls_on_a_fresh_database_both_succeed(
    fresh_database: Settings, db: AsyncEngine
) -> None:
    results = await asyncio.gather(
        migrate(fresh_database), migrate(fresh_database), return_exceptions=True
    )

    assert results == [None, None]
    await _assert_at_head(fresh_database, db)


async def test_concurrent_creation_of_a_missing_database_both_succeed(
    fresh_database: Settings,
) -> None:
    results = await asyncio.gather(
        ensure_database(fresh_database.database_url),
        ensure_database(fresh_database.database_url),
        return_exceptions=True,
    )

    assert sorted(results, key=repr) == [False, True]


async def test_two_concurrent_migrate_calls_in_one_process_both_succeed(
    fresh_database: Settings, db: AsyncEngine
) -> None:
    await _create_empty(fresh_database)

    results = await asyncio.gather(
        migrate(fresh_database), migrate(fresh_database), return_exceptions=True
    )

    assert results == [None, None]
    await _assert_at_head(fresh_database, db)


class Ping(BaseModel):
    n: int


async def test_a_new_participant_gets_an_outbox_that_wakes_the_relay_as_sagaway_s_do(
    fresh_database: Settings,
) -> None:
    # An application with a participant sagaway's migrations know nothing of.
    pinger = Participant("pinger_migrations_test")

    @pinger.handles(Ping)
    async def ping(session: AsyncSession, command: Ping, ctx: CommandContext) -> Reply:
        return Succeeded()

    app = SagaApp(
        "pings",
        sagas=[
            SagaDefinition(
                name="pings",
                steps=(
                    Step(
                        name="ping",
                        action=Action(participant=pinger.name, command="Ping", payload=dict),
                    ),
                ),
            )
        ],
        participants=[pinger],
    )

    await migrate(fresh_database, app)
    engine = create_engine(fresh_database.database_url, pool_size=1)
    try:
        # As if the inbox had been created by a release before its digest column.
        async with engine.begin() as conn:
            await conn.execute(text(f"ALTER TABLE {pinger.name}.inbox DROP COLUMN digest"))
    finally:
        await engine.dispose()
    await migrate(fresh_database, app)  # again: only what is missing is added

    engine = create_engine(fresh_database.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            triggers = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT n.nspname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                            "JOIN pg_class c ON c.oid = t.tgrelid "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE t.tgname = 'outbox_notify'"
                        )
                    )
                ).all()
            )
            tables = set(
                (
                    await conn.execute(
                        text(
                            "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = :s"
                        ),
                        {"s": pinger.name},
                    )
                ).scalars()
            )
            inbox_columns = set(
                (
                    await conn.execute(
                        text(
                            "SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema = :s AND table_name = 'inbox'"
                        ),
                        {"s": pinger.name},
                    )
                ).scalars()
            )
    finally:
        await engine.dispose()
    assert tables == {"outbox", "inbox"}
    assert "digest" in inbox_columns
    # The same trigger as sagaway's own participants, schema aside (and theirs untouched).
    ours = triggers["inventory"].replace("inventory.", "SCHEMA.")
    assert triggers[pinger.name].replace(f"{pinger.name}.", "SCHEMA.") == ours
    assert "WHEN ((new.claim_token IS NULL))" in ours
