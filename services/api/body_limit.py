"""ASGI middleware that refuses request bodies over a size limit, chunked or not, or
slower to arrive than a deadline."""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024
"""The API's body limit (SPEC: over 64 KiB is a 413)."""


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answers 413 when a body exceeds ``max_bytes``, 408 when it takes longer than
    ``timeout_s`` to arrive whole.

    A declared ``Content-Length`` is checked before reading anything. Otherwise the
    body is read here, counted as it arrives and cut off as soon as it passes the
    limit, then handed to the application from memory. It has to be read here: the
    framework turns any error raised while *it* reads the body into a 400.

    The deadline runs from the end of the request head (the server keeps the head's
    own, ``sagaway.runners.http_protocol``): a client trickling its body a byte at a
    time would otherwise hold its connection, and the request's task, for ever.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send, 413, f"request body exceeds {self.max_bytes} bytes")
                    return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except _TooLarge:
            await self._refuse(send, 413, f"request body exceeds {self.max_bytes} bytes")
            return
        except TimeoutError:
            await self._refuse(
                send, 408, f"request body not received within {self.timeout_s:g} seconds"
            )
            return
        if body is None:
            return  # the client went away before sending its whole body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is not read: the connection cannot carry
                    # another request.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
