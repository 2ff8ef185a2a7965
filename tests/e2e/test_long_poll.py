"""``GET /sagas/{id}?wait_s=N``: answered when the saga ends, or after N seconds as it is."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client.parser import text_string_to_metric_families

from sagaway.orchestrator.application import Names
from tests.e2e.conftest import System
from tests.support import wait_for

TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED"}


async def _order(api: httpx.AsyncClient, admin: dict[str, str]) -> str:
    sku = f"LP-{uuid.uuid4().hex[:8]}"
    stocked = await api.put(f"/admin/inventory/{sku}", json={"available": 5}, headers=admin)
    assert stocked.status_code == 200, stocked.text
    placed = await api.post(
        "/orders",
        json={"customer_id": "c-lp", "items": [{"sku": sku, "quantity": 1, "unit_price_cents": 1}]},
    )
    assert placed.status_code == 202, placed.text
    saga_id: str = placed.json()["saga_id"]
    return saga_id


async def _statements(api: httpx.AsyncClient) -> float:
    text = (await api.get("/metrics/")).text
    return next(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "sagaway_db_statements_total"
    )


async def _consumers(broker: AbstractRobustConnection, queue: str) -> int:
    async with broker.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.consumer_count or 0


@asynccontextmanager
async def _inventory_down(system: System, broker: AbstractRobustConnection) -> AsyncIterator[None]:
    """No inventory worker for the block: a saga waits for its first step (its deadline
    is 3 s a try, so it stays RUNNING for several seconds), then the worker is back."""
    queue = Names(system.settings.namespace).queue("inventory")
    try:
        assert await asyncio.to_thread(system.stop, "inventory") == 0
        await wait_for(lambda: _consumers(broker, queue), until=lambda n: n == 0, what="gone")
        yield
    finally:
        if "inventory" not in system.processes:
            system.start("inventory", "worker", "inventory")
        await wait_for(
            lambda: _consumers(broker, queue), until=lambda n: n == 1, within=30, what="back"
        )


async def test_a_saga_that_ends_is_answered_as_soon_as_it_is_terminal(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    saga_id = await _order(api, admin_headers)
    started = time.monotonic()

    answer = await api.get(f"/sagas/{saga_id}", params={"wait_s": 30}, timeout=40)

    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "COMPLETED"
    assert elapsed < 10, f"answered after {elapsed:.1f} s, not when the saga ended"
    # The same body as without wait_s.
    assert (await api.get(f"/sagas/{saga_id}")).json() == answer.json()


async def test_a_running_saga_is_answered_as_it_is_after_wait_s_with_no_query_meanwhile(
    system: System,
    broker: AbstractRobustConnection,
    api: httpx.AsyncClient,
    admin_headers: dict[str, str],
) -> None:
    async with _inventory_down(system, broker):
        saga_id = await _order(api, admin_headers)
        before = await _statements(api)
        started = time.monotonic()

        answer = await api.get(f"/sagas/{saga_id}", params={"wait_s": 2}, timeout=10)

        elapsed = time.monotonic() - started
        after = await _statements(api)
    body: dict[str, Any] = answer.json()
    assert answer.status_code == 200, answer.text
    assert body["status"] == "RUNNING"
    assert body["current_step"] == "reserve_inventory"
    assert 1.9 <= elapsed < 5, elapsed
    # One read before waiting, one at the deadline: nothing while waiting.
    assert after - before == 2


async def test_several_clients_waiting_for_one_saga_are_all_answered(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    saga_id = await _order(api, admin_headers)
    answers = await asyncio.gather(
        *(api.get(f"/sagas/{saga_id}", params={"wait_s": 30}, timeout=40) for _ in range(5))
    )
    assert {a.json()["status"] for a in answers} == {"COMPLETED"}


@pytest.mark.parametrize("wait_s", ["31", "-1", "30.5", "soon", "nan", "inf"])
async def test_wait_s_outside_0_to_30_is_422(api: httpx.AsyncClient, wait_s: str) -> None:
    answer = await api.get(f"/sagas/{uuid.uuid4()}", params={"wait_s": wait_s})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert [issue["loc"] for issue in detail] == [["query", "wait_s"]]


@pytest.mark.parametrize("wait_s", ["0", "0.5", "30"])
async def test_an_unknown_saga_is_404_at_once_whatever_the_wait(
    api: httpx.AsyncClient, wait_s: str
) -> None:
    started = time.monotonic()
    answer = await api.get(f"/sagas/{uuid.uuid4()}", params={"wait_s": wait_s})
    assert answer.status_code == 404
    assert answer.json() == {"detail": "saga not found"}
    assert time.monotonic() - started < 2
