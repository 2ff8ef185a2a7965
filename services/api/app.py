"""The HTTP API: sagas, admin, dashboard, health and contracts, plus the routes the
saga application adds (the order application adds ``/orders``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import version

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app

from sagaway.orchestrator.application import SagaApp
from sagaway.outbox.database import create_engine, raw_connect, session_factory
from sagaway.outbox.settings import Settings
from sagaway.services.api import (
    routes_admin_outbox,
    routes_admin_sagas,
    routes_contracts,
    routes_dashboard,
    routes_health,
    routes_sagas,
)
from sagaway.services.api.body_limit import MAX_BODY_BYTES, BodyLimitMiddleware
from sagaway.services.api.method_not_allowed import method_not_allowed
from sagaway.services.api.request_log import RequestLogMiddleware
from sagaway.services.api.routes_faults import faults_router
from sagaway.services.api.saga_watch import SagaEndWatcher
from sagaway.services.api.tracing_middleware import TracingMiddleware
from sagaway.services.api.unavailable import DatabaseUnavailableMiddleware

log = structlog.get_logger(__name__)


@asynccontextmanager
async def api_resources(
    app: FastAPI, settings: Settings, application: SagaApp
) -> AsyncIterator[None]:
    """Open what sagaway's routes read from ``app.state`` (the database, the saga
    coordinator, the watcher of saga ends) for the block, and close it after: the
    lifespan of sagaway's own API, and of a team's app that includes
    :func:`~sagaway.services.api.router.saga_router`."""
    db = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    app.state.settings = settings
    app.state.application = application
    app.state.db_engine = db
    app.state.sessions = session_factory(db)
    # A status read, or placing an order, is one statement: in autocommit it is one
    # round trip, not three (no BEGIN, no COMMIT or ROLLBACK around it).
    app.state.autocommit_sessions = session_factory(
        db.execution_options(isolation_level="AUTOCOMMIT")
    )
    app.state.saga_coordinator = application.saga_coordinator(settings)
    # One LISTEN connection per process wakes every long poll of GET /sagas/{id}.
    watcher = SagaEndWatcher(partial(raw_connect, settings.database_url))
    app.state.saga_watcher = watcher
    stop = asyncio.Event()
    watching = asyncio.create_task(watcher.run(stop), name="saga-end-watcher")
    if settings.admin_token_value() is None:
        log.warning("SAGAWAY_ADMIN_TOKEN is not set: every /admin call will answer 401")
    log.info("api ready")
    try:
        yield
    finally:
        stop.set()
        await watching
        await db.dispose()


def create_app(settings: Settings, application: SagaApp) -> FastAPI:
    """Build the API of ``application`` for ``settings``; resources open in the lifespan,
    not at import."""

    app = FastAPI(
        title="sagaway",
        version=version("sagaway"),
        summary="Saga orchestrator with a transactional outbox",
        lifespan=partial(api_resources, settings=settings, application=application),
    )
    for router in application.routers:
        app.include_router(router)
    app.include_router(routes_sagas.router)
    app.include_router(routes_admin_sagas.router)
    app.include_router(faults_router(application.participant_names))
    app.include_router(routes_admin_outbox.router)
    app.include_router(routes_dashboard.router)
    app.mount("/ui", routes_dashboard.ui_files(), name="ui")
    # Routes read these from the state; set here too, not only in the lifespan, so an
    # app used without it (a test client) still knows its application.
    app.state.settings = settings
    app.state.application = application
    app.include_router(routes_health.router)
    app.include_router(routes_contracts.router)
    # The API's own metrics (and any the process registers) on its HTTP port.
    app.mount("/metrics", make_asgi_app(), name="metrics")
    app.add_exception_handler(Exception, _unhandled)
    app.add_exception_handler(405, method_not_allowed)
    # Innermost of ours: a database outage is a 503 by the time the access log and the
    # request's span see it.
    app.add_middleware(DatabaseUnavailableMiddleware)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES, timeout_s=settings.api_body_timeout_s
    )
    app.add_middleware(RequestLogMiddleware)
    app.add_middleware(TracingMiddleware)  # last added, outermost: its span covers the rest
    return app


def release_waiters(app: FastAPI) -> None:
    """Answer every long poll of ``GET /sagas/{id}?wait_s=N`` now: call it when the server
    starts shutting down, so that waiting clients do not hold up the graceful shutdown."""
    watcher: SagaEndWatcher | None = getattr(app.state, "saga_watcher", None)
    if watcher is not None:
        watcher.close()


async def _unhandled(request: Request, exc: Exception) -> Response:
    # A database outage never gets here (DatabaseUnavailableMiddleware answers it).
    log.error("unhandled error", error=type(exc).__name__, path=request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": "internal error"})
