"""FastAPI dependencies: the per-request session, the coordinator, the application, the
admin check.

Every one is ``async def``, even those that never await: FastAPI runs a plain ``def``
dependency on a worker thread, and those thread hops were a fifth of the API's CPU."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.coordinator import SagaCoordinator
from sagaway.outbox.settings import Settings
from sagaway.services.api.saga_watch import SagaEndWatcher


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def _read_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.autocommit_sessions
    return sessions


async def _one_statement_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.autocommit_sessions() as session:
        yield session


async def _watcher(request: Request) -> SagaEndWatcher:
    watcher: SagaEndWatcher | None = getattr(request.app.state, "saga_watcher", None)
    # An app that mounts these routes without the API's lifespan has no watcher: a
    # watcher that never listens makes long polls re-read at its fallback interval.
    return watcher if watcher is not None else _NOT_LISTENING


async def _never_connect() -> None:
    raise RuntimeError("this watcher never listens")


_NOT_LISTENING = SagaEndWatcher(_never_connect)


async def _coordinator(request: Request) -> SagaCoordinator:
    engine: SagaCoordinator = request.app.state.saga_coordinator
    return engine


async def _application(request: Request) -> SagaApp:
    application: SagaApp = request.app.state.application
    return application


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[AsyncSession, Depends(_session)]
OneStatementSessionDep = Annotated[AsyncSession, Depends(_one_statement_session)]
"""An autocommit session, for a handler whose writes all go out as one statement (so
they are atomic without BEGIN and COMMIT round trips): placing an order."""
ReadSessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_read_sessions)]
"""Autocommit sessions, for reads of one statement each (no BEGIN/ROLLBACK round trips),
and for a handler that must not hold a connection for its whole request (a long poll)."""
WatcherDep = Annotated[SagaEndWatcher, Depends(_watcher)]
CoordinatorDep = Annotated[SagaCoordinator, Depends(_coordinator)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ApplicationDep = Annotated[SagaApp, Depends(_application)]


# Declared so that the OpenAPI document says how /admin authenticates; the check
# itself is ours (a missing or malformed header is a 401 like a wrong token).
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="`Authorization: Bearer <SAGAWAY_ADMIN_TOKEN>`",
)


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    """Checks ``Authorization: Bearer <SAGAWAY_ADMIN_TOKEN>`` in constant time."""
    expected = settings.admin_token_value()
    if (
        expected is None
        or credentials is None
        or not hmac.compare_digest(credentials.credentials.encode(), expected.encode())
    ):
        raise HTTPException(
            status_code=401,
            detail="admin token missing or wrong",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return "admin"


AdminDep = Annotated[str, Depends(require_admin)]
