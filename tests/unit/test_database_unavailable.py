"""A request that fails because PostgreSQL is away answers 503, on a tiny app in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sagaway.services.api.unavailable import DatabaseUnavailableMiddleware


class _Lost(Exception):
    """asyncpg's error for a connection the server closed, as the driver names it."""

    sqlstate = "08006"


async def _refused(_: Request) -> Response:
    raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


async def _lost(_: Request) -> Response:
    raise OperationalError("INSERT ...", {}, _Lost("connection was closed"))


async def _bug(_: Request) -> Response:
    raise ValueError("a bug, not an outage")


async def _lost_midway(_: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"["
        raise ConnectionRefusedError(111, "refused")

    return StreamingResponse(body(), media_type="application/json")


def _client() -> httpx.AsyncClient:
    app = Starlette(
        routes=[
            Route("/refused", _refused),
            Route("/lost", _lost),
            Route("/bug", _bug),
            Route("/midway", _lost_midway),
        ],
        middleware=[Middleware(DatabaseUnavailableMiddleware)],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.parametrize("path", ["/refused", "/lost"])
async def test_a_refused_or_lost_database_connection_answers_503_with_detail(path: str) -> None:
    async with _client() as http:
        response = await http.get(path)

    assert response.status_code == 503
    assert response.json() == {"detail": "database unavailable"}
    # Nothing of the driver's message (addresses, statements) reaches the client.
    assert "127.0.0.1" not in response.text and "INSERT" not in response.text


async def test_any_other_error_is_left_to_the_server() -> None:
    async with _client() as http:
        with pytest.raises(ValueError, match="a bug"):
            await http.get("/bug")


async def test_a_response_already_started_is_not_turned_into_a_503() -> None:
    async with _client() as http:
        with pytest.raises(ConnectionRefusedError):
            await http.get("/midway")
