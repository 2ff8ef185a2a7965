"""sagaway's status and admin routes, for a team's own FastAPI application."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Request

from sagaway.orchestrator.application import SagaApp
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.settings import Settings
from sagaway.services.api import (
    routes_admin_outbox,
    routes_admin_sagas,
    routes_contracts,
    routes_sagas,
)
from sagaway.services.api.routes_faults import faults_router


def saga_router(application: SagaApp, settings: Settings | None = None) -> APIRouter:
    """``GET /sagas/{id}``, ``/admin/sagas`` (list, retry, abort), ``/admin/faults``,
    ``/admin/outbox`` and ``/asyncapi.json`` for ``application``, to include in a team's
    own FastAPI app (``api.include_router(saga_router(app))``).

    The database engine is opened at the first request, from ``settings`` (default: the
    ``SAGAWAY_*`` environment); admin routes need ``SAGAWAY_ADMIN_TOKEN``.
    """
    settings = settings or Settings()
    router = APIRouter(dependencies=[Depends(partial(_attach, application, settings))])
    router.include_router(routes_sagas.router)
    router.include_router(routes_admin_sagas.router)
    router.include_router(faults_router(application.participant_names))
    router.include_router(routes_admin_outbox.router)
    router.include_router(routes_contracts.router)
    return router


async def _attach(application: SagaApp, settings: Settings, request: Request) -> None:
    """Give the hosting app what sagaway's routes read from its state, once."""
    state = request.app.state
    if getattr(state, "application", None) is not None:
        return
    db = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    state.settings = settings
    state.db_engine = db
    state.sessions = session_factory(db)
    state.autocommit_sessions = session_factory(db.execution_options(isolation_level="AUTOCOMMIT"))
    state.saga_coordinator = application.saga_coordinator(settings)
    state.application = application
