"""The order saga over HTTP against every component running as a process."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support import wait_for

TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED"}


async def _stock(api: httpx.AsyncClient, admin: dict[str, str], sku: str, units: int) -> None:
    response = await api.put(f"/admin/inventory/{sku}", json={"available": units}, headers=admin)
    assert response.status_code == 200, response.text


async def _credit(api: httpx.AsyncClient, admin: dict[str, str], customer: str, cents: int) -> None:
    response = await api.put(
        f"/admin/customers/{customer}", json={"credit_limit_cents": cents}, headers=admin
    )
    assert response.status_code == 200, response.text


async def _place(
    api: httpx.AsyncClient, customer: str, sku: str, qty: int, price: int
) -> dict[str, Any]:
    response = await api.post(
        "/orders",
        json={
            "customer_id": customer,
            "items": [{"sku": sku, "quantity": qty, "unit_price_cents": price}],
        },
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/sagas/{body['saga_id']}"
    assert body["status"] == "PENDING"
    return body


async def _finished(api: httpx.AsyncClient, saga_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        result: dict[str, Any] = (await api.get(f"/sagas/{saga_id}")).json()
        return result

    return await wait_for(probe, until=lambda s: s["status"] in TERMINAL, what="saga terminal")


async def test_happy_path_completes_and_allocates(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sku, customer = f"E2E-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    await _stock(api, admin_headers, sku, 10)
    await _credit(api, admin_headers, customer, 10_000)

    placed = await _place(api, customer, sku, 3, 1500)
    saga = await _finished(api, placed["saga_id"])

    assert saga["status"] == "COMPLETED"
    assert [s["name"] for s in saga["steps"]] == [
        "reserve_inventory",
        "authorize_payment",
        "approve_order",
        "notify_customer",
    ]
    assert all(s["status"] == "SUCCEEDED" and s["attempts"] == 1 for s in saga["steps"])
    assert saga["failure_reason"] is None
    order = (await api.get(f"/orders/{placed['order_id']}")).json()
    assert order["status"] == "APPROVED"
    assert order["total_cents"] == 4500
    stock = (await api.get(f"/admin/inventory/{sku}", headers=admin_headers)).json()
    assert stock == {"sku": sku, "available": 7, "reserved": 3}
    credit = (await api.get(f"/admin/customers/{customer}", headers=admin_headers)).json()
    assert credit["authorized_cents"] == 4500


async def test_out_of_stock_is_compensated(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sku, customer = f"E2E-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    await _stock(api, admin_headers, sku, 2)

    placed = await _place(api, customer, sku, 3, 100)
    saga = await _finished(api, placed["saga_id"])

    assert saga["status"] == "COMPENSATED"
    assert "out_of_stock" in saga["failure_reason"]
    statuses = {s["name"]: s["status"] for s in saga["steps"]}
    assert statuses["reserve_inventory"] == "FAILED"
    assert statuses["authorize_payment"] == "PENDING"
    order = (await api.get(f"/orders/{placed['order_id']}")).json()
    assert order["status"] == "REJECTED"
    assert order["rejection_reason"] == "out_of_stock"
    stock = (await api.get(f"/admin/inventory/{sku}", headers=admin_headers)).json()
    assert stock == {"sku": sku, "available": 2, "reserved": 0}


async def test_insufficient_funds_releases_the_reservation(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sku, customer = f"E2E-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    await _stock(api, admin_headers, sku, 5)
    await _credit(api, admin_headers, customer, 999)

    placed = await _place(api, customer, sku, 1, 1000)
    saga = await _finished(api, placed["saga_id"])

    assert saga["status"] == "COMPENSATED"
    assert "insufficient_funds" in saga["failure_reason"]
    statuses = {s["name"]: s["status"] for s in saga["steps"]}
    assert statuses == {
        "reserve_inventory": "COMPENSATED",
        "authorize_payment": "FAILED",
        "approve_order": "PENDING",
        "notify_customer": "PENDING",
    }
    order = (await api.get(f"/orders/{placed['order_id']}")).json()
    assert (order["status"], order["rejection_reason"]) == ("REJECTED", "insufficient_funds")
    stock = (await api.get(f"/admin/inventory/{sku}", headers=admin_headers)).json()
    assert stock == {"sku": sku, "available": 5, "reserved": 0}
    credit = (await api.get(f"/admin/customers/{customer}", headers=admin_headers)).json()
    assert credit == {"customer_id": customer, "credit_limit_cents": 999, "authorized_cents": 0}
