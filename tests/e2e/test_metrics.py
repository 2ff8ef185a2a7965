"""Prometheus metrics: the API's on its own port, a relay's on SAGAWAY_METRICS_PORT."""

from __future__ import annotations

import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sagaway.outbox.broker_nodes import node_address
from tests.e2e.conftest import System
from tests.support import free_port, wait_for


def _samples(text: str) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_api_metrics_count_started_sagas(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sku = f"M-{uuid.uuid4().hex[:8]}"
    await api.put(f"/admin/inventory/{sku}", json={"available": 5}, headers=admin_headers)
    before = _samples((await api.get("/metrics/")).text)
    key = "sagaway_sagas_started_total[('saga_type', 'order_fulfillment')]"
    placed = await api.post(
        "/orders",
        json={"customer_id": "c-m", "items": [{"sku": sku, "quantity": 1, "unit_price_cents": 1}]},
    )
    assert placed.status_code == 202
    after = _samples((await api.get("/metrics/")).text)
    assert after[key] == before.get(key, 0.0) + 1


async def test_a_relay_serves_its_metrics_and_probes(
    system: System, api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    port = free_port()
    system.start("relay-metrics", "relay", env={"SAGAWAY_METRICS_PORT": str(port)})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def scrape() -> str:
                try:
                    return (await client.get("/metrics")).text
                except httpx.TransportError:
                    return ""

            # The janitor refreshes the backlog gauges right after start-up.
            text = await wait_for(scrape, until=lambda t: "sagaway_outbox_backlog{" in t, within=30)
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {
            "sagaway_outbox_published",
            "sagaway_outbox_backlog",
            "sagaway_outbox_oldest_unpublished_seconds",
            "sagaway_outbox_commit_to_publish_seconds",
            "sagaway_outbox_dead_rows",
        } <= names
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "rabbitmq_node": _node(system)}
    finally:
        system.stop("relay-metrics")


async def test_a_worker_answers_its_probes(system: System) -> None:
    port = free_port()
    system.start("worker-probes", "worker", "notification", env={"SAGAWAY_METRICS_PORT": str(port)})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def readyz() -> httpx.Response | None:
                try:
                    return await client.get("/readyz")
                except httpx.TransportError:
                    return None

            ready = await wait_for(readyz, until=lambda r: r is not None, within=30)
            assert ready is not None
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "rabbitmq_node": _node(system)}
            assert (await client.get("/healthz")).json() == {"status": "ok"}
    finally:
        system.stop("worker-probes")


DB_COUNTERS = (
    "sagaway_db_statements_total[]",
    "sagaway_db_transactions_total[('outcome', 'commit')]",
    "sagaway_db_round_trips_total[]",
)


async def test_the_api_counts_its_database_round_trips_and_cpu(api: httpx.AsyncClient) -> None:
    before = _samples((await api.get("/metrics/")).text)
    placed = await api.post(
        "/orders",
        json={
            "customer_id": "c-m",
            "items": [{"sku": "NONE", "quantity": 1, "unit_price_cents": 1}],
        },
    )
    assert placed.status_code == 202
    after = _samples((await api.get("/metrics/")).text)

    # Placing an order (the order, its saga, its history and first command) is one
    # statement in autocommit: one round trip, no BEGIN or COMMIT around it.
    statements = after[DB_COUNTERS[0]] - before[DB_COUNTERS[0]]
    round_trips = after[DB_COUNTERS[2]] - before[DB_COUNTERS[2]]
    assert (statements, round_trips) == (1, 1)
    assert after["process_cpu_seconds_total[]"] > 0


async def test_a_worker_counts_its_database_round_trips_on_its_side_port(
    system: System, api: httpx.AsyncClient
) -> None:
    port = free_port()
    system.start("worker-db", "worker", "notification", env={"SAGAWAY_METRICS_PORT": str(port)})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def scrape() -> dict[str, float]:
                try:
                    return _samples((await client.get("/metrics")).text)
                except httpx.TransportError:
                    return {}

            # A readiness probe asks PostgreSQL with the worker's own engine: one statement.
            first = await wait_for(scrape, until=lambda s: DB_COUNTERS[0] in s, within=30)
            assert (await client.get("/readyz")).status_code == 200
            second = await scrape()
        assert second[DB_COUNTERS[0]] > first[DB_COUNTERS[0]]
        assert second[DB_COUNTERS[2]] > first[DB_COUNTERS[2]]
        assert second["process_cpu_seconds_total[]"] > 0
    finally:
        system.stop("worker-db")


def _node(system: System) -> str:
    """The node a component of ``system`` connects to (it lists one)."""
    return node_address(system.settings.amqp_nodes[0])
