"""Trace context propagation, and tracing being off unless OTEL_* turns it on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sagaway.logging import _add_trace_ids
from sagaway.services.api.tracing_middleware import TracingMiddleware
from sagaway.tracing import build_provider, configure_tracing, extract, inject

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@contextmanager
def _running_in(traceparent: str) -> Iterator[None]:
    """Make the caller's span the current one, as a request or delivery would."""
    token = context.attach(extract(traceparent))
    try:
        yield
    finally:
        context.detach(token)


def _ids(traceparent: str | None) -> tuple[str, str]:
    assert traceparent is not None
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert version == "00"
    return trace_id, span_id


def test_nothing_is_injected_outside_any_span() -> None:
    assert inject() is None


def test_extract_then_inject_gives_back_the_same_traceparent() -> None:
    assert inject(extract(CALLER)) == CALLER
    assert inject(extract(CALLER.encode())) == CALLER


@pytest.mark.parametrize("missing", [None, "", "not-a-traceparent", "00-" + "0" * 32 + "-" * 2])
def test_a_missing_or_malformed_traceparent_gives_an_empty_context(missing: str | None) -> None:
    context = extract(missing)

    assert not trace.get_current_span(context).get_span_context().is_valid
    assert inject(context) is None


def test_an_empty_context_is_not_the_current_one() -> None:
    # A span started on extract(None) must be a root, not a child of what runs now.
    with _running_in(CALLER):
        assert inject() == CALLER
        assert inject(extract(None)) is None


def test_tracing_is_off_by_default_and_installs_no_sdk() -> None:
    for environ in ({}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": " None "}):
        assert build_provider("api", environ) is None
    assert (
        build_provider("api", {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"})
        is None
    )

    assert configure_tracing("api", {}) is None

    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_without_an_sdk_a_span_carries_the_callers_trace_on_unchanged() -> None:
    tracer = trace.get_tracer(__name__)

    with tracer.start_as_current_span("process ReserveInventory", context=extract(CALLER)) as span:
        assert not span.is_recording()
        # What the outbox writer stores on a row written in this span.
        assert inject() == CALLER


def test_with_an_sdk_a_span_is_a_child_in_the_same_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)

    with tracer.start_as_current_span("process ReserveInventory", context=extract(CALLER)):
        written = inject()
    with tracer.start_as_current_span("process InventoryReserved", context=extract(written)):
        pass

    first, second = exporter.get_finished_spans()
    assert _ids(written) == (TRACE_ID, format(first.context.span_id, "016x"))
    assert {format(s.context.trace_id, "032x") for s in (first, second)} == {TRACE_ID}
    assert first.parent is not None and format(first.parent.span_id, "016x") == "b7ad6b7169203331"
    assert second.parent is not None and second.parent.span_id == first.context.span_id
    provider.shutdown()


def test_the_console_exporter_names_the_service_after_the_component() -> None:
    provider = build_provider("payment", {"OTEL_TRACES_EXPORTER": "console"})

    assert provider is not None
    assert provider.resource.attributes[SERVICE_NAME] == "sagaway-payment"
    assert provider.resource.attributes["sagaway.component"] == "payment"
    provider.shutdown()


def test_otel_service_name_wins_and_otlp_builds() -> None:
    provider = build_provider(
        "relay", {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_SERVICE_NAME": "shop-relay"}
    )

    assert provider is not None
    assert provider.resource.attributes[SERVICE_NAME] == "shop-relay"
    provider.shutdown()


def test_unknown_exporters_alone_leave_tracing_off() -> None:
    assert build_provider("api", {"OTEL_TRACES_EXPORTER": "jaeger"}) is None


def test_log_lines_carry_the_current_trace_and_span_ids() -> None:
    event: dict[str, Any] = {"event": "saga advanced"}
    assert _add_trace_ids(None, "info", dict(event)) == event

    with _running_in(CALLER):
        line = _add_trace_ids(None, "info", dict(event))

    assert line == {**event, "trace_id": TRACE_ID, "span_id": "b7ad6b7169203331"}


def _echo_app() -> httpx.AsyncClient:
    """An app behind the tracing middleware that answers what the outbox would store."""

    async def endpoint(_: Request) -> JSONResponse:
        return JSONResponse({"traceparent": inject()})

    app = Starlette(routes=[Route("/orders", endpoint), Route("/readyz", endpoint)])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=TracingMiddleware(app)), base_url="http://t"
    )


async def test_without_an_sdk_a_request_carries_the_callers_trace_into_what_it_writes() -> None:
    async with _echo_app() as client:
        with_caller = await client.get("/orders", headers={"traceparent": CALLER})
        without = await client.get("/orders")
        probe = await client.get("/readyz", headers={"traceparent": CALLER})

    assert with_caller.json() == {"traceparent": CALLER}
    assert without.json() == {"traceparent": None}
    assert probe.json() == {"traceparent": None}  # probes are not traced
