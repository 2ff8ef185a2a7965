"""OpenTelemetry set-up for one component process: off unless ``OTEL_*`` turns it on.

Configured by the standard variables alone, so any OpenTelemetry collector or backend
works without sagaway-specific settings:

- ``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP over HTTP/protobuf), ``console``, both
  comma-separated, or ``none``. Unset or ``none`` installs no SDK at all: the API's
  no-op tracer still carries an incoming trace through outbox rows and messages
  (see ``outbox.tracing``), but records and exports nothing.
- ``OTEL_SERVICE_NAME`` (default ``sagaway-<component>``), ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and headers,
  ``OTEL_BSP_*`` batching, ``OTEL_TRACES_SAMPLER``, ``OTEL_SDK_DISABLED``: read by the
  SDK itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

import sagaway
from sagaway.outbox.tracing import TRACEPARENT, extract, inject

__all__ = ["TRACEPARENT", "build_provider", "configure_tracing", "extract", "inject", "tracing"]

log = structlog.get_logger(__name__)

EXPORTERS = ("otlp", "console")


def build_provider(
    component: str, environ: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """A tracer provider exporting as ``OTEL_TRACES_EXPORTER`` asks, or None for none.

    Args:
        component: names the service (``sagaway-<component>``) unless
            ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` name it.
        environ: the variables to decide from (default: the process environment).
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [
        n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()
    ]
    found = (_exporter(n, env) for n in names if n != "none")
    exporters = [e for e in found if e is not None]
    if not exporters:
        return None
    attributes: dict[str, str] = {
        SERVICE_VERSION: sagaway.__version__,
        "sagaway.component": component,
    }
    # The standard precedence: OTEL_SERVICE_NAME, then service.name in
    # OTEL_RESOURCE_ATTRIBUTES (merged in by Resource.create), then our default.
    if env.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = env["OTEL_SERVICE_NAME"]
    elif "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes[SERVICE_NAME] = f"sagaway-{component}"
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        # Batched on a background thread: a span ending never waits for the network,
        # and a collector that is down costs dropped spans, not slower sagas.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_tracing(
    component: str, environ: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """Install the provider ``build_provider`` makes as the process's global one.

    Returns it (to shut down on exit), or None when tracing is off: then nothing is
    installed and the API's no-op tracer stays in place.
    """
    provider = build_provider(component, environ)
    if provider is not None:
        trace.set_tracer_provider(provider)
        log.info(
            "tracing on",
            service=provider.resource.attributes.get(SERVICE_NAME),
            exporters=(os.environ if environ is None else environ).get("OTEL_TRACES_EXPORTER"),
        )
    return provider


@contextmanager
def tracing(component: str) -> Iterator[None]:
    """Tracing for the body of a component's run; spans still queued are flushed at the
    end, so the last work before a graceful stop is exported too."""
    provider = configure_tracing(component)
    try:
        yield
    finally:
        if provider is not None:
            provider.shutdown()


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            log.warning(
                "only the http/protobuf OTLP protocol is installed; using it",
                requested=protocol,
            )
        # Imported here: it pulls in protobuf and requests, which a process with
        # tracing off never needs.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    log.warning("unknown OTEL_TRACES_EXPORTER ignored", exporter=name, known=EXPORTERS)
    return None
