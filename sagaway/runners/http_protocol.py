"""uvicorn's HTTP protocol with a deadline and a size limit on the request head.

uvicorn closes a connection left idle *after* a response (``timeout_keep_alive``), but
not one that never finishes sending a request head: a client that connects and says
nothing, or sends its headers a byte at a time, holds its socket for ever. Enough of
them exhaust the process's file descriptors and the API stops accepting anyone.

This protocol gives each request head a deadline, counted from the moment the
connection opens or, on a kept-alive connection, from the first byte of the next
request; a head not complete by then closes the connection. The body has its own
deadline, kept by ``services.api.body_limit`` where a 408 can be answered.

Nor does uvicorn's httptools parser limit a head's size: it buffers a header however
long, and a client sending one of 200 MB made the API's memory grow by twice that. A
head over ``MAX_HEAD_BYTES`` is answered 431 and the connection closed.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
"""The most a request line and its headers may take (nginx allows 32 KiB by default)."""

_TOO_LARGE = json.dumps({"detail": f"request head exceeds {MAX_HEAD_BYTES} bytes"}).encode()


class HeadDeadlineProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection whose request head is late or
    too large.

    Subclass it with ``head_timeout_s`` set (``head_deadline_protocol`` does): uvicorn
    builds its protocols itself, so the deadline travels as a class attribute.
    """

    head_timeout_s: float = 10.0
    _head_deadline: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte is waiting for its first head too.
        self._start_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_deadline is None or self.transport.is_closing():
            return
        # The head is still incomplete after these bytes. On a pipelined connection they
        # may include the end of the previous request: an overcount of one read at most.
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._stop_head_deadline()
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The first byte of a request; on a fresh connection the deadline already runs
        # from the connection's opening and is kept.
        self._start_head_deadline()

    def on_headers_complete(self) -> None:
        self._stop_head_deadline()
        self._head_bytes = 0
        super().on_headers_complete()

    def _start_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _refuse_head(self) -> None:
        # Written here, as uvicorn writes its own 400 for a head it cannot parse: no
        # request exists yet for the application to answer.
        lines = [b"HTTP/1.1 431 Request Header Fields Too Large"]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [
            b"content-type: application/json",
            b"content-length: " + str(len(_TOO_LARGE)).encode(),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + _TOO_LARGE)
        self.transport.close()

    def _head_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def head_deadline_protocol(head_timeout_s: float) -> type[HeadDeadlineProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``.

    Args:
        head_timeout_s: seconds a request head may take to arrive whole.

    Returns:
        A ``HeadDeadlineProtocol`` subclass with that deadline.
    """
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout_s": head_timeout_s})
