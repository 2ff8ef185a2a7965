"""``sagaway migrate``: create the database if needed, then Alembic upgrade head."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from sagaway.database import create_engine, ensure_database
from sagaway.settings import Settings, redact_url

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    """The Alembic configuration of the packaged migrations."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


async def migrate(settings: Settings) -> None:
    """Bring the database to the newest schema; safe to run again and concurrently."""
    created = await ensure_database(settings.database_url)
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        # Alembic keeps its migration context in a module global, so two upgrades in
        # one process must not interleave; across processes the advisory lock taken
        # in env.py serializes them.
        async with _process_lock(), engine.begin() as connection:
            await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()
    log.info(
        "database migrated",
        url=redact_url(settings.database_url),
        created=created,
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
