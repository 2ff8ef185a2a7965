"""``sagaway migrate``: create the database if needed, then Alembic upgrade head of
sagaway's migrations and of the application's own, and the participants' outboxes.

An application's migrations are ordinary Alembic revision files in a package of the
team's (``SagaApp(migrations="trips.migrations")``). They run through sagaway's
Alembic environment (its connection, its advisory lock) but keep a version history of
their own, in the table ``alembic_version_<application name>``, so neither history
ever sees the other's revisions.
"""

from __future__ import annotations

import asyncio
import importlib
import weakref
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn

from sagaway.application_loader import load_application
from sagaway.definition_report import report_definitions
from sagaway.migrations.models import SCHEMAS
from sagaway.orchestrator.application import SagaApp
from sagaway.outbox.database import create_engine, ensure_database, session_factory
from sagaway.outbox.settings import Settings, redact_url

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Per row, only for rows no consumer claimed (migration 0008): a consumer publishes the
# rows it commits itself, and the relay is woken only for the others.
OUTBOX_NOTIFY_TRIGGER = (
    'CREATE TRIGGER outbox_notify AFTER INSERT ON "{schema}".outbox '
    "FOR EACH ROW WHEN (NEW.claim_token IS NULL) "
    "EXECUTE FUNCTION public.sagaway_outbox_notify()"
)


def alembic_config() -> Config:
    """The Alembic configuration of the packaged migrations."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


async def migrate(settings: Settings, application: SagaApp | None = None) -> None:
    """Bring the database to the newest schema of sagaway and of ``application`` (by
    default the one ``settings.app`` names); safe to run again and concurrently."""
    application = application or load_application(settings.app)
    created = await ensure_database(settings.database_url)
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        # Alembic keeps its migration context in a module global, so two upgrades in
        # one process must not interleave; across processes the advisory lock taken
        # in env.py serializes them.
        async with _process_lock(), engine.begin() as connection:
            await connection.run_sync(_upgrade)
            await connection.run_sync(_participant_tables, application)
            if application.migrations:
                await connection.run_sync(_upgrade_application, application)
        await report_definitions(session_factory(engine), application)
    finally:
        await engine.dispose()
    log.info(
        "database migrated",
        url=redact_url(settings.database_url),
        created=created,
        application=application.name,
    )


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _participant_tables(connection: Connection, application: SagaApp) -> None:
    """Give every participant whose schema sagaway's migrations do not manage its outbox
    and inbox, with the trigger that wakes the relay for rows nobody claimed (what
    migrations 0004 and 0008 give sagaway's own), and bring existing ones up to the
    columns ``outbox_table``/``inbox_table`` declare today.

    New columns of those tables are nullable (``inbox.digest`` was), so adding one to a
    table full of rows is a catalog change; a release that needs more writes a
    migration of its own.
    """
    managed = set(SCHEMAS)
    for participant in application.participants.values():
        if participant.schema in managed:
            continue
        schema = participant.schema
        if not inspect(connection).has_table("outbox", schema=schema):
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            participant.outbox.create(connection)
            connection.execute(text(OUTBOX_NOTIFY_TRIGGER.format(schema=schema)))
        participant.inbox.create(connection, checkfirst=True)
        for table in (participant.outbox, participant.inbox):
            present = {c["name"] for c in inspect(connection).get_columns(table.name, schema)}
            for column in table.columns:
                if column.name not in present:
                    spec = CreateColumn(column).compile(dialect=connection.dialect)
                    connection.execute(
                        text(f'ALTER TABLE "{schema}".{table.name} ADD COLUMN {spec}')
                    )
                    log.info("column added", table=f"{schema}.{table.name}", column=column.name)


def application_alembic_config(application: SagaApp) -> Config:
    """The Alembic configuration of the application's own migrations.

    Raises:
        ValueError: the migrations package cannot be imported.
    """
    assert application.migrations is not None
    try:
        package = importlib.import_module(application.migrations)
    except ModuleNotFoundError as exc:
        raise ValueError(
            f"application {application.name}: no migrations package {application.migrations!r}"
        ) from exc
    if package.__file__ is None:
        raise ValueError(f"{application.migrations} is a namespace package: add __init__.py")
    root = Path(package.__file__).parent
    versions = root / "versions" if (root / "versions").is_dir() else root
    cfg = alembic_config()
    cfg.set_main_option("version_locations", str(versions))
    cfg.attributes["version_table"] = f"alembic_version_{application.name}"
    return cfg


def _upgrade_application(connection: Connection, application: SagaApp) -> None:
    cfg = application_alembic_config(application)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
