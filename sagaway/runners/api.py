"""``sagaway api``: the HTTP API under uvicorn."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from sagaway.outbox.settings import Settings
from sagaway.runners.http_protocol import head_deadline_protocol
from sagaway.services.api.app import create_app, release_waiters
from sagaway.wiring import application


def run_api(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGTERM; uvicorn finishes in-flight requests before exiting."""
    app = create_app(settings, application(settings))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our structlog handler formats uvicorn's lines too
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.api_keep_alive_s,
        # uvicorn has no deadline of its own on a request head; ours closes the
        # connections of clients that connect and say nothing, or trickle their headers.
        http=head_deadline_protocol(settings.api_header_timeout_s),
    )
    _Server(config, app).run()


class _Server(uvicorn.Server):
    """A uvicorn server that answers waiting long polls as soon as it starts stopping,
    instead of holding them until ``timeout_graceful_shutdown`` cuts them off."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        release_waiters(self._app)
        await super().shutdown(sockets)
