"""FastAPI dependencies: the per-request session, the engine, the admin check."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.engine import SagaEngine
from sagaway.settings import Settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def _engine(request: Request) -> SagaEngine:
    engine: SagaEngine = request.app.state.saga_engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[AsyncSession, Depends(_session)]
EngineDep = Annotated[SagaEngine, Depends(_engine)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def require_admin(request: Request, settings: SettingsDep) -> str:
    """Checks ``Authorization: Bearer <SAGAWAY_ADMIN_TOKEN>`` in constant time."""
    expected = settings.admin_token_value()
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if (
        expected is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(presented.strip().encode(), expected.encode())
    ):
        raise HTTPException(
            status_code=401,
            detail="admin token missing or wrong",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return "admin"


AdminDep = Annotated[str, Depends(require_admin)]
