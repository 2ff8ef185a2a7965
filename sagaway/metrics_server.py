"""Each component's Prometheus endpoint."""

from __future__ import annotations

import structlog
from prometheus_client import start_http_server

from sagaway.settings import Settings

log = structlog.get_logger(__name__)


def serve_metrics(settings: Settings) -> None:
    """Serve /metrics on ``SAGAWAY_METRICS_PORT`` in a background thread, if set."""
    if settings.metrics_port is None:
        return
    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info(
        "metrics served", url=f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    )
