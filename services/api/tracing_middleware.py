"""ASGI middleware: every HTTP request runs in a span that continues the caller's trace."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagaway.outbox.tracing import extract

tracer = trace.get_tracer(__name__)

# Probes and scrapes arrive every few seconds and say nothing about any saga.
UNTRACED = ("/healthz", "/readyz", "/metrics")


class TracingMiddleware:
    """Opens a SERVER span per request whose parent is the incoming ``traceparent``,
    unless the request already runs in one.

    Everything the request writes (the saga row, its first command in the outbox)
    records the current span's context, so the saga's trace starts here, or in the
    caller's trace when the caller sent a ``traceparent``.

    Recent FastAPI versions open such a span themselves, with operation spans below
    it, whenever an OpenTelemetry SDK is installed; this middleware then steps aside.
    It is what carries the caller's trace when no SDK is installed (FastAPI's own
    telemetry is off then, and the span here is the API's free no-op one) and what
    traces requests on a FastAPI without native telemetry. Attribute names follow the
    same semantic conventions as FastAPI's, so the two look alike.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path.startswith(UNTRACED)
            or trace.get_current_span().get_span_context().is_valid
        ):
            await self.app(scope, receive, send)
            return
        traceparent = next((v for k, v in scope.get("headers", []) if k == b"traceparent"), None)
        method: str = scope["method"]
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracer.start_as_current_span(
            method,
            context=extract(traceparent),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                # The router put the matched route in the scope on the way in; its
                # template (not the path) keeps span names few and groupable.
                template = getattr(scope.get("route"), "path", None)
                if isinstance(template, str):
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
