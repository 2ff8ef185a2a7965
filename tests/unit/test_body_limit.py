"""The body-size limit and the body deadline, on a tiny Starlette app driven in memory."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from sagaway.services.api.body_limit import BodyLimitMiddleware

LIMIT = 1024


class Echo:
    """An app that echoes the body back and remembers every call that reached it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        # Wired the way services/orders/app.py wires it: inside Starlette's own stack.
        self.app = Starlette(
            routes=[Route("/echo", self._echo, methods=["POST"])],
            middleware=[Middleware(BodyLimitMiddleware, max_bytes=LIMIT)],
        )

    async def _echo(self, request: Request) -> Response:
        body = await request.body()
        self.bodies.append(body)
        return Response(body, media_type="application/octet-stream")


@pytest.fixture
def echo() -> Echo:
    return Echo()


def client(echo: Echo) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=echo.app), base_url="http://t")


@pytest.mark.parametrize("size", [0, 10, LIMIT])
async def test_a_body_within_the_limit_reaches_the_app_intact(echo: Echo, size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    async with client(echo) as http:
        response = await http.post("/echo", content=body)

    assert response.status_code == 200
    assert response.content == body
    assert echo.bodies == [body]


async def test_a_chunked_body_within_the_limit_reaches_the_app_intact(echo: Echo) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(4):
            yield bytes([n]) * 100

    async with client(echo) as http:
        response = await http.post("/echo", content=chunks())

    assert response.status_code == 200
    assert response.content == b"".join(bytes([n]) * 100 for n in range(4))
    assert len(echo.bodies) == 1


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs(
    echo: Echo,
) -> None:
    async with client(echo) as http:
        response = await http.post("/echo", content=b"x" * (LIMIT + 1))

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert str(LIMIT) in detail
    assert echo.bodies == []


async def test_a_declared_length_is_enough_to_refuse_without_reading(echo: Echo) -> None:
    """The Content-Length header alone decides; no byte of the body is read."""
    read = 0

    async def receive() -> dict[str, object]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    called = False

    async def app(scope: object, receive: object, send: object) -> None:
        nonlocal called
        called = True

    middleware = BodyLimitMiddleware(app, max_bytes=LIMIT)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-length", str(LIMIT * 100).encode())],
    }
    await middleware(scope, receive, send)  # type: ignore[arg-type]

    assert called is False
    assert read == 0
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413


async def test_a_chunked_body_over_the_limit_is_refused_and_cut_off(echo: Echo) -> None:
    yielded = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal yielded
        for _ in range(1000):
            yielded += 1
            yield b"y" * 256

    async with client(echo) as http:
        response = await http.post("/echo", content=chunks())

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert "detail" in response.json()
    assert echo.bodies == []
    # Cut off as soon as the limit passed, not after buffering the whole body.
    assert yielded <= LIMIT // 256 + 1


# --- the body's deadline -------------------------------------------------------------


def _scope() -> dict[str, object]:
    return {"type": "http", "method": "POST", "path": "/", "headers": []}


async def test_a_body_that_does_not_arrive_in_time_is_answered_408() -> None:
    called = False

    async def app(scope: object, receive: object, send: object) -> None:
        nonlocal called
        called = True

    async def trickle() -> dict[str, object]:
        # A byte now and then, for ever: each message on its own is prompt.
        await asyncio.sleep(0.01)
        return {"type": "http.request", "body": b" ", "more_body": True}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    middleware = BodyLimitMiddleware(app, max_bytes=LIMIT * 1000, timeout_s=0.2)
    started = time.monotonic()
    await middleware(_scope(), trickle, send)  # type: ignore[arg-type]

    assert 0.2 <= time.monotonic() - started < 5
    assert called is False
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]  # type: ignore[operator]
    assert "0.2 seconds" in json.loads(sent[1]["body"])["detail"]  # type: ignore[arg-type]


async def test_a_body_arriving_within_the_deadline_reaches_the_app() -> None:
    bodies: list[bytes] = []

    async def app(scope: object, receive: Callable[[], Awaitable[Message]], send: object) -> None:
        bodies.append((await receive())["body"])

    parts = [b'{"a":', b" 1}"]

    async def receive() -> dict[str, object]:
        await asyncio.sleep(0.01)
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    middleware = BodyLimitMiddleware(app, max_bytes=LIMIT, timeout_s=5)  # type: ignore[arg-type]
    await middleware(_scope(), receive, lambda m: asyncio.sleep(0))  # type: ignore[arg-type]

    assert bodies == [b'{"a": 1}']
