"""sagaway's status and admin routes, for a team's own FastAPI application."""

from __future__ import annotations

from fastapi import APIRouter

from sagaway.orchestrator.application import SagaApp
from sagaway.services.api import (
    routes_admin_outbox,
    routes_admin_sagas,
    routes_contracts,
    routes_sagas,
)
from sagaway.services.api.routes_faults import faults_router


def saga_router(application: SagaApp) -> APIRouter:
    """``GET /sagas/{id}``, ``/admin/sagas`` (list, retry, abort), ``/admin/faults``,
    ``/admin/outbox`` and ``/asyncapi.json`` for ``application``, to include in a team's
    own FastAPI app.

    The routes read the database, the saga coordinator and the application from the
    app's state, which :func:`~sagaway.services.api.app.api_resources` opens; make it
    (part of) the app's lifespan::

        api = FastAPI(lifespan=lambda a: sagaway.api_resources(a, settings, app))
        api.include_router(sagaway.saga_router(app))

    Admin routes need ``SAGAWAY_ADMIN_TOKEN``.
    """
    router = APIRouter()
    router.include_router(routes_sagas.router)
    router.include_router(routes_admin_sagas.router)
    router.include_router(faults_router(application.participant_names))
    router.include_router(routes_admin_outbox.router)
    router.include_router(routes_contracts.router)
    return router
