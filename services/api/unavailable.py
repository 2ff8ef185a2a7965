"""ASGI middleware: a request that failed because PostgreSQL is away answers 503."""

from __future__ import annotations

import structlog
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagaway.outbox.transient import is_transient

log = structlog.get_logger(__name__)

DETAIL = "database unavailable"


class DatabaseUnavailableMiddleware:
    """Turns a lost, refused or restarting database connection into ``503 {"detail":
    "database unavailable"}``.

    Why a middleware and not an exception handler: Starlette sends a handler registered
    for ``Exception`` from its outermost layer and then raises the exception again, so
    the server logs a traceback and drops the keep-alive connection, and a client sees
    its next request on it fail with a reset instead of the 503. Here the error is
    answered where it happens, like any other response. Whatever the request wrote was
    in a transaction (or a single statement) that did not commit, or did so entirely:
    nothing is half-written. Only the error's type is logged: driver messages may carry
    connection details.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            # A response already under way cannot become a 503; nor can a bug.
            if started or not is_transient(exc):
                raise
            log.error("database unavailable", error=type(exc).__name__)
            await JSONResponse(status_code=503, content={"detail": DETAIL})(scope, receive, send)
