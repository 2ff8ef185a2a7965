"""Thousands of distinct idempotency keys do not slow ``POST /orders``.

A key is looked up through the primary key of ``orders.idempotency_keys``, both where
the insert decides whether it is new (its conflict arbiter) and where a replay reads the
first answer. The plan is asserted (deterministic); the latency of keyed requests through
the API, before and after 10,000 more keys, is printed (``pytest -s``), not asserted:
two shared cores make timings too noisy for a tight bound.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement

from sagaway.services.orders.tables import idempotency_keys

BULK = 10_000
PREFIX = "bulk-idem-"
SAMPLES = 30


async def _plan(db: AsyncEngine, statement: ClauseElement) -> str:
    sql = statement.compile(dialect=db.dialect, compile_kwargs={"literal_binds": True})
    async with db.connect() as conn:
        rows = await conn.execute(text(f"EXPLAIN {sql}"))
        return "\n".join(r[0] for r in rows)


def _order(run: str) -> dict[str, Any]:
    # A SKU nobody stocks: each saga ends at once (out of stock), touching no stock.
    return {
        "customer_id": f"c-idem-{run}",
        "items": [{"sku": f"IDEM-{run}", "quantity": 1, "unit_price_cents": 100}],
    }


async def _keyed_latencies(api: httpx.AsyncClient, run: str) -> dict[str, list[float]]:
    """Milliseconds of ``SAMPLES`` posts with new keys, then of their replays."""
    body = _order(run)
    keys = [f"lat-{run}-{i}" for i in range(SAMPLES)]
    measured: dict[str, list[float]] = {"new key": [], "replay": []}
    for label in measured:
        for key in keys:
            started = time.perf_counter()
            response = await api.post("/orders", json=body, headers={"Idempotency-Key": key})
            measured[label].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 202, response.text
    return measured


def _summary(measured: dict[str, list[float]]) -> str:
    return ", ".join(
        f"{label}: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms"
        for label, ms in measured.items()
    )


async def _insert_bulk(db: AsyncEngine) -> None:
    """``BULK`` distinct keys, written straight into the table."""
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO orders.idempotency_keys"
                " (key, request_hash, order_id, saga_id, status_code)"
                " SELECT :prefix || g, md5(g::text) || md5(g::text),"
                " gen_random_uuid(), gen_random_uuid(), 202"
                " FROM generate_series(1, :n) AS g"
            ),
            {"prefix": PREFIX, "n": BULK},
        )
    # What autovacuum does on its own after such an insert, done now: the planner then
    # plans for a table of this size.
    async with db.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE orders.idempotency_keys"))


@pytest.fixture
async def bulk_cleanup(db: AsyncEngine) -> AsyncIterator[None]:
    """Removes the bulk keys when the test ends, passed or not."""
    yield
    async with db.begin() as conn:
        await conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.key.startswith(PREFIX))
        )


async def test_keys_are_found_through_the_primary_key_and_latency_holds(
    api: httpx.AsyncClient, db: AsyncEngine, bulk_cleanup: None
) -> None:
    before = await _keyed_latencies(api, uuid.uuid4().hex[:8])

    await _insert_bulk(db)
    async with db.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(idempotency_keys))
    assert count is not None and count >= BULK

    # The replay's read of the first answer (services/orders/placing.py).
    lookup = select(idempotency_keys).where(idempotency_keys.c.key == f"{PREFIX}4242")
    lookup_plan = await _plan(db, lookup)
    assert "Index Scan using idempotency_keys_pkey" in lookup_plan, lookup_plan
    assert "Seq Scan" not in lookup_plan, lookup_plan
    # The guard that decides whether a key is new (outbox.deferred.defer_guard).
    guard = (
        insert(idempotency_keys)
        .values(
            key=f"{PREFIX}4242",
            request_hash="0" * 64,
            order_id=uuid.UUID(int=1),
            saga_id=uuid.UUID(int=2),
            status_code=202,
        )
        .on_conflict_do_nothing(index_elements=["key"])
    )
    guard_plan = await _plan(db, guard)
    assert "Conflict Arbiter Indexes: idempotency_keys_pkey" in guard_plan, guard_plan

    after = await _keyed_latencies(api, uuid.uuid4().hex[:8])

    print(f"\nkeyed POST /orders with few keys: {_summary(before)}")
    print(f"keyed POST /orders with {count} keys: {_summary(after)}")
