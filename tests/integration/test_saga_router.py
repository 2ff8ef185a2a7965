"""sagaway's routes in a team's own FastAPI app: saga_router, with api_resources as the
app's lifespan, next to a route of the team's that uses sagaway's session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

import sagaway
from sagaway.outbox.settings import Settings
from sagaway.services.order_app import order_app

pytestmark = pytest.mark.integration


def _team_api(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        async with sagaway.api_resources(api, settings, order_app):
            yield

    api = FastAPI(lifespan=lifespan)

    @api.get("/ours")
    async def ours(session: sagaway.SessionDep, app: sagaway.ApplicationDep) -> dict[str, str]:
        one = await session.scalar(text("SELECT 'one'"))
        return {"app": app.name, "db": str(one)}

    api.include_router(sagaway.saga_router(order_app))
    return api


async def test_a_team_app_serves_sagaways_routes_and_its_own(migrated: Settings) -> None:
    api = _team_api(migrated)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as client,
    ):
        ours = await client.get("/ours")
        unknown = await client.get(f"/sagas/{uuid.uuid4()}")
        document = await client.get("/asyncapi.json")
        faults = await client.get("/admin/faults/payment", headers={"Authorization": "Bearer x"})

    assert ours.json() == {"app": "orders", "db": "one"}
    assert unknown.status_code == 404
    assert "ReserveInventory" in document.json()["components"]["messages"]
    assert faults.status_code == 401
