"""W3C trace context that travels with messages: into outbox rows, AMQP headers, and out.

Only the OpenTelemetry *API* is used here. Without an SDK installed (the default,
see ``sagaway.tracing``) the API's tracer creates no spans of its own, yet a span
started under an extracted parent carries that parent's context, so a trace begun by
a caller still flows through every message at next to no cost.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
"""The W3C header (and column, and AMQP header) that carries the context."""

_PROPAGATOR = TraceContextTextMapPropagator()


def inject(context: Context | None = None) -> str | None:
    """The ``traceparent`` of ``context`` (default: the current one), or None when it
    holds no valid span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier.get(TRACEPARENT)


def extract(traceparent: str | bytes | None) -> Context:
    """A context whose parent is the remote span ``traceparent`` names.

    Missing or malformed, it is an *empty* context, never the current one: a span
    started with it is a new root rather than a child of whatever happens to be
    running, which would splice unrelated sagas into one trace.
    """
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("ascii", errors="replace")
    if not traceparent:
        return Context()
    return _PROPAGATOR.extract({TRACEPARENT: traceparent}, context=Context())
