"""Engine construction and the one helper that creates the database if it is missing."""

from __future__ import annotations

import asyncpg
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from sagaway.settings import redact_url

log = structlog.get_logger(__name__)


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Build the async engine one process shares.

    No pre-ping: it costs a round trip on every checkout, and a connection that died
    with a restarted server fails its first statement with an error every caller
    already treats as transient (the transaction is retried or the message held).
    No overflow either: connections beyond the pool would be opened and closed under
    load, which costs more than waiting for a pooled one.
    """
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=30,
        pool_recycle=1800,
        connect_args={"timeout": 10},
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (we read them to build replies)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ensure_database(database_url: str) -> bool:
    """Create the database named in ``database_url`` if it does not exist.

    Returns True when it was created. Connects to the ``postgres`` maintenance
    database with the same credentials, as ``createdb`` does.
    """
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("SAGAWAY_DATABASE_URL names no database")
    conn = await raw_connect(database_url, database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        # CREATE DATABASE cannot take a bind parameter; quote the identifier ourselves.
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            # Another process won the race (which of the two errors depends on when
            # the catalog noticed); the database exists, and that is all we need.
            return False
        log.info("database created", database=name, url=redact_url(str(url)))
        return True
    finally:
        await conn.close()


async def raw_connect(database_url: str, *, database: str | None = None) -> asyncpg.Connection:
    """A plain asyncpg connection (for LISTEN, or the maintenance database)."""
    url = make_url(database_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    # asyncpg takes ``ssl`` as a keyword, not a query argument; pass it through so a
    # TLS-only server works here too.
    ssl = url.query.get("ssl")
    url = url.difference_update_query(["ssl"])
    return await asyncpg.connect(
        url.render_as_string(hide_password=False),
        timeout=10,
        **({"ssl": ssl} if isinstance(ssl, str) else {}),
    )
