"""Alembic environment: URL from Settings, a schema per service, one migrator at a time."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from sagaway.migrations.models import ALL_METADATA, SCHEMAS

# Any 64-bit constant shared by every migrator; two `sagaway migrate` at once queue up.
_MIGRATION_LOCK = 0x5A6A_0A1

config = context.config


def _include_name(name: str | None, type_: str, _: object) -> bool:
    if type_ == "schema":
        return name in SCHEMAS
    return True


def _run(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=list(ALL_METADATA),
        include_schemas=True,
        include_name=_include_name,
        compare_type=True,
        compare_server_default=True,
        # An application's own migrations keep their history in a table of their own
        # (sagaway.migrate.application_alembic_config).
        version_table=config.attributes.get("version_table", "alembic_version"),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    from sagaway.outbox.database import create_engine

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `sagaway migrate`")
else:
    from sagaway.outbox.settings import Settings

    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    asyncio.run(_run_async(url))
