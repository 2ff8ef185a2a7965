"""``sagaway api``: the HTTP API under uvicorn."""

from __future__ import annotations

import uvicorn

from sagaway.settings import Settings
from services.orders.app import create_app


def run_api(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGTERM; uvicorn finishes in-flight requests before exiting."""
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,  # our structlog handler formats uvicorn's lines too
        access_log=False,
        timeout_graceful_shutdown=10,
        # Longer than the usual client or load-balancer idle timeout, so the client is
        # the one that closes an idle connection (a server-side close races with a
        # request the client is just sending).
        timeout_keep_alive=30,
    )
