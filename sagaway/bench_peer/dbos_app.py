"""The DBOS peer server: ``python -m sagaway.bench_peer.dbos_app --mode transactions|steps``.

One process, as DBOS's FastAPI guide has it: DBOS is configured, the workflow is
registered, ``DBOS.launch()`` runs, then uvicorn serves the app, on one event loop
(uvloop where installed, as ``sagaway api`` runs under uvicorn's default). The settings
below are DBOS's documented ones; ``docs/`` references are to DBOS's documentation:

- ``system_database_url`` on the same PostgreSQL, a database of its own
  (python/reference/configuration.md, "Database Connection Settings").
- ``sys_db_pool_size`` (default 20), ``max_executor_threads`` (default unbounded) and
  ``db_engine_kwargs`` (the system pool's SQLAlchemy arguments; the tuned peer drops
  DBOS's ``pool_pre_ping``), from the same page.
- the application database as a datasource (python/tutorials/transaction-tutorial.md:
  "Datasources are the recommended approach"), with its SQLAlchemy ``engine_kwargs``
  pool and a transaction ``isolation_level`` (DBOS's default SERIALIZABLE; the tuned
  peer uses READ COMMITTED, safe because every rule locks the rows it changes).
- ``application_version`` set explicitly, ``log_level`` WARNING; no queue: the workflows
  start directly from the request, which is what the docs do for HTTP-started work
  (queues are for bounding concurrency, and the bench bounds it already).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import uvicorn
from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig, SQLAlchemyDatasource
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import sessionmaker

from sagaway.bench_peer.dbos_routes import SagaTracker, create_app, start_orphans
from sagaway.bench_peer.dbos_saga import StepWriters, build_order_saga
from sagaway.bench_peer.tables import metadata
from sagaway.bench_peer.tuning import (
    ISOLATION_LEVELS,
    MODES,
    STYLES,
    IsolationLevel,
    Mode,
    PeerTuning,
    Style,
)

APP_NAME = "sagaway-peer"


@dataclass(frozen=True, kw_only=True)
class PeerConfig:
    """How the peer server runs.

    Attributes:
        app_database_url: The application database (any SQLAlchemy PostgreSQL URL).
        system_database_url: DBOS's system database.
        host: Address to listen on.
        port: Port to listen on.
        mode: ``transactions`` or ``steps``.
        tuning: DBOS's settings.
        log_level: DBOS's log level.
    """

    app_database_url: str
    system_database_url: str
    host: str = "127.0.0.1"
    port: int
    mode: Mode
    tuning: PeerTuning = field(default_factory=PeerTuning)
    log_level: str = "WARNING"


def dbos_config(config: PeerConfig) -> DBOSConfig:
    """DBOS's configuration for the peer."""
    settings: DBOSConfig = {
        "name": APP_NAME,
        "application_version": "1",
        "system_database_url": _plain(config.system_database_url),
        "sys_db_pool_size": config.tuning.sys_db_pool_size,
        "log_level": config.log_level,
    }
    if not config.tuning.sys_db_pre_ping:
        # DBOS's own engine arguments, less the ping (db_engine_kwargs replaces them).
        settings["db_engine_kwargs"] = {
            "connect_args": {"application_name": "dbos_transact"},
            "pool_timeout": 30,
            "max_overflow": 0,
            "pool_pre_ping": False,
        }
    if config.tuning.max_executor_threads is not None:
        settings["max_executor_threads"] = config.tuning.max_executor_threads
    return settings


async def serve(config: PeerConfig) -> None:
    """Open the application database, launch DBOS, serve until SIGTERM or SIGINT."""
    pool = {"pool_size": config.tuning.app_pool_size, "max_overflow": 0, "pool_timeout": 30}
    # The HTTP handlers write with the application's own driver: asyncpg, as sagaway's do.
    url = make_url(config.app_database_url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, **pool)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    writers, step_engine = await _step_writers(config, sessions, pool)

    DBOS(config=dbos_config(config))
    saga = build_order_saga(
        mode=config.mode,
        style=config.tuning.style,
        writers=writers,
        isolation_level=config.tuning.isolation_level,
    )
    DBOS.launch()
    tracker = SagaTracker()
    await start_orphans(sessions, saga, tracker)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(sessions=sessions, saga=saga, tracker=tracker),
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    try:
        await server.serve()
    finally:
        tracker.close()
        DBOS.destroy(workflow_completion_timeout_sec=5)
        await engine.dispose()
        if isinstance(step_engine, AsyncEngine):
            await step_engine.dispose()
        elif step_engine is not None:
            step_engine.dispose()


async def _step_writers(
    config: PeerConfig, sessions: async_sessionmaker[AsyncSession], pool: dict[str, Any]
) -> tuple[StepWriters, AsyncEngine | Engine | None]:
    """What the steps write with, and the engine to dispose of at the end (if any)."""
    plain_url = _plain(config.app_database_url)
    match config.mode, config.tuning.style:
        case "transactions", "async":
            ads = await AsyncSQLAlchemyDatasource.create(plain_url, engine_kwargs=pool)
            return StepWriters(async_datasource=ads), ads.engine
        case "transactions", "sync":
            ds = await asyncio.to_thread(SQLAlchemyDatasource.create, plain_url, pool)
            return StepWriters(sync_datasource=ds), ds.engine
        case "steps", "async":
            return StepWriters(async_sessions=sessions), None
        case _:
            # DBOS's synchronous steps need a synchronous driver: psycopg, which DBOS uses.
            engine = create_engine(make_url(plain_url).set(drivername="postgresql+psycopg"), **pool)
            return StepWriters(sync_sessions=sessionmaker(engine, expire_on_commit=False)), engine


def parse_args(argv: Sequence[str] | None = None) -> PeerConfig:
    """The server's configuration from its command line."""
    parser = argparse.ArgumentParser(prog="python -m sagaway.bench_peer.dbos_app")
    parser.add_argument("--app-database-url", required=True)
    parser.add_argument("--system-database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    defaults = PeerTuning()
    parser.add_argument("--style", choices=STYLES, default=defaults.style)
    parser.add_argument(
        "--isolation-level", choices=ISOLATION_LEVELS, default=defaults.isolation_level
    )
    parser.add_argument("--sys-db-pool-size", type=int, default=defaults.sys_db_pool_size)
    parser.add_argument("--app-pool-size", type=int, default=defaults.app_pool_size)
    parser.add_argument("--max-executor-threads", type=int, default=defaults.max_executor_threads)
    parser.add_argument(
        "--sys-db-pre-ping", action=argparse.BooleanOptionalAction, default=defaults.sys_db_pre_ping
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    return PeerConfig(
        app_database_url=args.app_database_url,
        system_database_url=args.system_database_url,
        host=args.host,
        port=args.port,
        mode=cast(Mode, args.mode),
        tuning=PeerTuning(
            style=cast(Style, args.style),
            sys_db_pool_size=args.sys_db_pool_size,
            app_pool_size=args.app_pool_size,
            max_executor_threads=args.max_executor_threads,
            isolation_level=cast(IsolationLevel, args.isolation_level),
            sys_db_pre_ping=args.sys_db_pre_ping,
        ),
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the peer server until it is stopped."""
    config = parse_args(argv)
    logging.basicConfig(level=config.log_level)
    _run(serve(config))


def _run(main_coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


def _plain(url: str) -> str:
    """The URL with its driver dropped: DBOS picks psycopg for what it opens itself."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


if __name__ == "__main__":
    main()
