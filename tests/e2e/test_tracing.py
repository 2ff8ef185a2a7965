"""One saga, one trace: from the HTTP request through every participant and back.

The components export to the tests' OTLP receiver (see ``conftest.system``). Each
test finds a saga's spans by their ``saga_id`` attribute, then checks that they share
a single trace id and that this trace is one tree: a single root, the API's request
span (a child of the caller's span when the caller sent a ``traceparent``), with every
other span below it, every message's processing a child of the span that wrote it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.span_receiver import (
    SPAN_KIND_CONSUMER,
    SPAN_KIND_SERVER,
    ExportedSpan,
    SpanReceiver,
)
from tests.support import wait_for

Admin = dict[str, str]

API = "sagaway-api"
ORCHESTRATOR = "sagaway-orchestrator"
PARTICIPANTS = ("sagaway-inventory", "sagaway-payment", "sagaway-notification")
HAPPY_PATH = {
    ("sagaway-inventory", "process ReserveInventory"),
    (ORCHESTRATOR, "process InventoryReserved"),
    ("sagaway-payment", "process AuthorizePayment"),
    (ORCHESTRATOR, "process PaymentAuthorized"),
    ("sagaway-notification", "process NotifyCustomer"),
    (ORCHESTRATOR, "process CustomerNotified"),
}


@dataclass(frozen=True)
class SagaTrace:
    """A saga's spans and every span of the trace they are in."""

    saga: list[ExportedSpan]
    trace: list[ExportedSpan]

    @property
    def trace_ids(self) -> set[str]:
        return {s.trace_id for s in self.saga}

    def roots(self) -> list[ExportedSpan]:
        """Spans of the trace whose parent is not in it (one, once all arrived)."""
        ids = {s.span_id for s in self.trace}
        return [s for s in self.trace if s.parent_span_id not in ids]


def _uid() -> str:
    return uuid.uuid4().hex[:10]


async def _prepare(api: httpx.AsyncClient, admin: Admin) -> tuple[str, str]:
    sku, customer = f"TRACE-{_uid()}", f"c-trace-{_uid()}"
    response = await api.put(f"/admin/inventory/{sku}", json={"available": 10}, headers=admin)
    assert response.status_code == 200, response.text
    response = await api.put(
        f"/admin/customers/{customer}", json={"credit_limit_cents": 100_000}, headers=admin
    )
    assert response.status_code == 200, response.text
    return sku, customer


async def _place(
    api: httpx.AsyncClient, sku: str, customer: str, *, traceparent: str | None = None
) -> str:
    response = await api.post(
        "/orders",
        json={
            "customer_id": customer,
            "items": [{"sku": sku, "quantity": 1, "unit_price_cents": 700}],
        },
        headers={"traceparent": traceparent} if traceparent else {},
    )
    assert response.status_code == 202, response.text
    saga_id: str = response.json()["saga_id"]
    return saga_id


async def _status(api: httpx.AsyncClient, saga_id: str, expect: str, within: float = 20) -> None:
    async def probe() -> dict[str, Any]:
        body: dict[str, Any] = (await api.get(f"/sagas/{saga_id}")).json()
        return body

    await wait_for(
        probe, until=lambda s: s["status"] == expect, within=within, what=f"saga {expect}"
    )


async def _saga_trace(
    receiver: SpanReceiver, saga_id: str, expected: set[tuple[str, str]]
) -> SagaTrace:
    """The saga's trace, once every ``(service, span name)`` in ``expected`` and the
    API's spans arrived and the trace has a single root."""

    async def probe() -> SagaTrace:
        saga = receiver.of_saga(saga_id)
        trace_ids = {s.trace_id for s in saga}
        return SagaTrace(saga, [s for s in receiver.spans() if s.trace_id in trace_ids])

    def complete(found: SagaTrace) -> bool:
        names = {(s.service, s.name) for s in found.saga}
        services = {s.service for s in found.saga}
        return expected <= names and API in services and len(found.roots()) == 1

    return await wait_for(probe, until=complete, within=20, what=f"trace of saga {saga_id}")


def _assert_one_tree(found: SagaTrace, saga_id: str, *, caller_span: str | None) -> str:
    """The saga is one trace, rooted at the request; returns the trace id."""
    assert len(found.trace_ids) == 1, sorted((s.service, s.name, s.trace_id) for s in found.saga)
    (root,) = found.roots()
    assert (root.service, root.kind, root.name) == (API, SPAN_KIND_SERVER, "POST /orders")
    assert root.parent_span_id == caller_span
    assert root.attributes["http.route"] == "/orders"
    assert root.attributes["http.response.status_code"] == 202
    # Nothing of another saga ended up in this trace.
    assert {s.attributes.get("saga_id", saga_id) for s in found.trace} == {saga_id}
    return root.trace_id


async def test_a_saga_is_one_trace_from_the_request_to_every_participant(
    api: httpx.AsyncClient, admin_headers: Admin, span_receiver: SpanReceiver
) -> None:
    sku, customer = await _prepare(api, admin_headers)

    saga_id = await _place(api, sku, customer)
    await _status(api, saga_id, "COMPLETED")
    found = await _saga_trace(span_receiver, saga_id, HAPPY_PATH)

    _assert_one_tree(found, saga_id, caller_span=None)
    assert {s.service for s in found.saga} == {API, ORCHESTRATOR, *PARTICIPANTS}
    ids = {s.span_id for s in found.trace}
    for span in found.saga:
        if span.kind == SPAN_KIND_CONSUMER:
            # A child of the span that wrote the message it processes: not a root.
            assert span.parent_span_id in ids, span
            queue = str(span.attributes["messaging.destination"])
            assert queue.rsplit(".", 1)[-1] == span.service.removeprefix("sagaway-")
            assert span.attributes["sagaway.outcome"] == "applied"


async def test_the_saga_joins_the_trace_of_the_caller(
    api: httpx.AsyncClient, admin_headers: Admin, span_receiver: SpanReceiver
) -> None:
    sku, customer = await _prepare(api, admin_headers)
    caller_trace, caller_span = os.urandom(16).hex(), os.urandom(8).hex()

    saga_id = await _place(api, sku, customer, traceparent=f"00-{caller_trace}-{caller_span}-01")
    await _status(api, saga_id, "COMPLETED")
    found = await _saga_trace(span_receiver, saga_id, HAPPY_PATH)

    assert _assert_one_tree(found, saga_id, caller_span=caller_span) == caller_trace


async def test_backoff_retries_and_an_operator_retry_stay_in_the_saga_trace(
    api: httpx.AsyncClient, admin_headers: Admin, span_receiver: SpanReceiver
) -> None:
    sku, customer = await _prepare(api, admin_headers)

    async def fault(mode: str) -> None:
        response = await api.put(
            "/admin/faults/payment", json={"mode": mode}, headers=admin_headers
        )
        assert response.status_code == 200, response.text

    await fault("unavailable")
    try:
        saga_id = await _place(api, sku, customer)
        # Each failed attempt is retried after a backoff, woken by the sweeper.
        await _status(api, saga_id, "FAILED", within=40)
    finally:
        await fault("ok")
    response = await api.post(f"/admin/sagas/{saga_id}/retry", headers=admin_headers)
    assert response.status_code == 202, response.text
    await _status(api, saga_id, "COMPLETED")
    found = await _saga_trace(
        span_receiver, saga_id, HAPPY_PATH | {(ORCHESTRATOR, "saga.wake"), (API, "saga.retry")}
    )

    trace_id = _assert_one_tree(found, saga_id, caller_span=None)
    outcomes = [s.attributes["sagaway.outcome"] for s in found.saga if s.service in PARTICIPANTS]
    assert outcomes == ["applied"] * len(outcomes)
    payments = [s for s in found.saga if s.name == "process AuthorizePayment"]
    assert len(payments) >= 2  # failed attempts (answered unavailable), then the good one
    # The operator's request is a trace of its own, linked from the saga's.
    (retry,) = [s for s in found.saga if s.name == "saga.retry"]
    ((linked_trace, _),) = retry.links
    assert linked_trace != trace_id

    async def request_spans() -> list[Any]:
        # The server span ends after the answer is sent, so it comes in a later batch.
        return [
            s
            for s in span_receiver.spans()
            if s.trace_id == linked_trace and s.kind == SPAN_KIND_SERVER
        ]

    requests = await wait_for(request_spans, what="the retry request's span")
    assert [s.attributes["http.route"] for s in requests] == ["/admin/sagas/{saga_id}/retry"]
