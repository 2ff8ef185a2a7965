"""Each component's HTTP side port: Prometheus ``/metrics``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import make_wsgi_app

from sagaway.outbox.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReadyState:
    """What a component's ``/readyz`` reports.

    Attributes:
        problems: What is down, by dependency (``postgres``, ``rabbitmq``), and why;
            empty when ready.
        rabbitmq_node: ``host:port`` of the RabbitMQ node the component is connected
            to, None while it is connected to none.
    """

    problems: dict[str, str]
    rabbitmq_node: str | None = None


Readiness = Callable[[], ReadyState]


def serve_metrics(settings: Settings, readiness: Readiness | None = None) -> None:
    """Serve on ``SAGAWAY_METRICS_PORT`` in a background thread, if set.

    ``/readyz`` answers 503 with a JSON body naming each dependency that is down and
    why (200 ``{"status": "ready"}`` otherwise), and in both the RabbitMQ node the
    component is on (``rabbitmq_node``: ``host:port``, or null); without ``readiness``
    it answers like ``/healthz``: the process runs.
    """
    if settings.metrics_port is None:
        return
    server = make_server(
        settings.metrics_host,
        settings.metrics_port,
        _app(readiness),
        server_class=_Server,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    base = f"http://{settings.metrics_host}:{settings.metrics_port}"
    log.info("metrics and probes served", metrics=f"{base}/metrics", readyz=f"{base}/readyz")


def _app(readiness: Readiness | None) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "ok"})
        if path == "/readyz":
            if readiness is None:
                return _json(start_response, "200 OK", {"status": "ready"})
            state = readiness()
            node = {"rabbitmq_node": state.rabbitmq_node}
            if state.problems:
                body = {
                    "status": "not ready",
                    "detail": "; ".join(f"{name}: {why}" for name, why in state.problems.items()),
                    **{name: "down" for name in state.problems},
                    **node,
                }
                return _json(start_response, "503 Service Unavailable", body)
            return _json(start_response, "200 OK", {"status": "ready", **node})
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


def _json(
    start_response: Callable[..., Any], status: str, body: dict[str, str | None]
) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: scrapes every few seconds would drown the real logs."""

    def log_message(self, format: str, *args: Any) -> None:
        return
