"""The HTTP contract of SPEC.md, checked against every component running as a process.

Rejected requests are checked for what they must not do as well as for their status:
the orders, sagas and idempotency keys in this run's database are counted before and
after. Only ``POST /orders`` creates those rows and the tests of one run go one at a
time, so equal counts mean the request wrote nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.tables import sagas
from sagaway.outbox.broker_nodes import node_address
from sagaway.services.orders.tables import idempotency_keys, orders
from tests.e2e.conftest import System
from tests.support import ADMIN_TOKEN, wait_for

Sessions = async_sessionmaker[AsyncSession]
Body = dict[str, Any]

STEPS = ["reserve_inventory", "authorize_payment", "approve_order", "notify_customer"]
TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED"}
MAX_BODY = 64 * 1024
ORDER_KEYS = {
    "order_id",
    "saga_id",
    "customer_id",
    "items",
    "total_cents",
    "currency",
    "status",
    "rejection_reason",
    "created_at",
    "updated_at",
}
SAGA_KEYS = {
    "saga_id",
    "saga_type",
    "order_id",
    "status",
    "current_step",
    "steps",
    "failure_reason",
    "created_at",
    "updated_at",
}
STEP_KEYS = {"name", "status", "attempts", "started_at", "finished_at", "error"}


# --- helpers ---------------------------------------------------------------------------


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def _customer() -> str:
    return f"c-http-{_uid()}"


def _sku() -> str:
    return f"HTTP-{_uid()}"


def _item(sku: str, **fields: Any) -> Body:
    return {"sku": sku, "quantity": 2, "unit_price_cents": 1500, **fields}


def _order(customer: str, *items: Body, **fields: Any) -> Body:
    return {"customer_id": customer, "items": list(items), **fields}


def _padded(body: Body, size: int) -> bytes:
    """``body`` as JSON padded with trailing whitespace (still valid JSON) to ``size`` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def _assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "detail" in response.json(), response.text


async def _counts(sessions: Sessions) -> tuple[int, int, int]:
    """Orders, sagas and idempotency keys in this run's database."""
    async with sessions() as session:
        return (
            await session.scalar(select(func.count()).select_from(orders)) or 0,
            await session.scalar(select(func.count()).select_from(sagas)) or 0,
            await session.scalar(select(func.count()).select_from(idempotency_keys)) or 0,
        )


async def _orders_and_sagas_of(sessions: Sessions, customer: str) -> tuple[int, int]:
    """How many orders ``customer`` has, and how many sagas those orders have."""
    async with sessions() as session:
        n_orders = await session.scalar(
            select(func.count()).select_from(orders).where(orders.c.customer_id == customer)
        )
        n_sagas = await session.scalar(
            select(func.count())
            .select_from(sagas.join(orders, sagas.c.order_id == orders.c.id))
            .where(orders.c.customer_id == customer)
        )
    return n_orders or 0, n_sagas or 0


async def _stock(api: httpx.AsyncClient, admin: dict[str, str], sku: str, units: int) -> Body:
    response = await api.put(f"/admin/inventory/{sku}", json={"available": units}, headers=admin)
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def _credit(api: httpx.AsyncClient, admin: dict[str, str], customer: str, cents: int) -> Body:
    response = await api.put(
        f"/admin/customers/{customer}", json={"credit_limit_cents": cents}, headers=admin
    )
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def _place(api: httpx.AsyncClient, body: Body, **headers: str) -> Body:
    response = await api.post("/orders", json=body, headers=headers)
    assert response.status_code == 202, response.text
    placed: Body = response.json()
    assert response.headers["location"] == f"/sagas/{placed['saga_id']}"
    return placed


async def _saga(api: httpx.AsyncClient, saga_id: str) -> Body:
    response = await api.get(f"/sagas/{saga_id}")
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def _finished(api: httpx.AsyncClient, saga_id: str) -> Body:
    return await wait_for(
        lambda: _saga(api, saga_id), until=lambda s: s["status"] in TERMINAL, what="saga ended"
    )


# --- POST /orders ----------------------------------------------------------------------


async def test_post_order_answers_202_with_ids_and_location(
    api: httpx.AsyncClient, sessions: Sessions
) -> None:
    customer = _customer()

    response = await api.post("/orders", json=_order(customer, _item(_sku())))

    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"order_id", "saga_id", "status"}
    assert body["status"] == "PENDING"
    order_id, saga_id = uuid.UUID(body["order_id"]), uuid.UUID(body["saga_id"])
    assert response.headers["location"] == f"/sagas/{saga_id}"
    # Committed before the answer: both are readable at once.
    assert (await api.get(f"/orders/{order_id}")).json()["saga_id"] == str(saga_id)
    assert (await api.get(f"/sagas/{saga_id}")).json()["order_id"] == str(order_id)
    assert await _orders_and_sagas_of(sessions, customer) == (1, 1)


async def test_currency_defaults_to_usd(api: httpx.AsyncClient) -> None:
    placed = await _place(api, _order(_customer(), _item(_sku())))

    order = (await api.get(f"/orders/{placed['order_id']}")).json()

    assert order["currency"] == "USD"


async def test_boundary_values_are_accepted(api: httpx.AsyncClient) -> None:
    customer = "c" * 64
    items = [_item("S" * 64, quantity=10_000, unit_price_cents=1_000_000_000)]
    items += [_item(f"{_sku()}._-{i}", quantity=1, unit_price_cents=0) for i in range(99)]

    placed = await _place(api, _order(customer, *items, currency="EUR"))

    order = (await api.get(f"/orders/{placed['order_id']}")).json()
    assert order["customer_id"] == customer
    assert order["items"] == items
    assert order["total_cents"] == 10_000 * 1_000_000_000
    assert order["currency"] == "EUR"


def _many_items(c: str, s: str) -> Body:
    return _order(c, *(_item(f"{s}-{i}") for i in range(101)))


INVALID_ORDERS = [
    pytest.param(lambda c, s: _order(c, _item(s), coupon="X"), id="unknown-top-level-field"),
    pytest.param(lambda c, s: _order(c, _item(s, colour="red")), id="unknown-item-field"),
    pytest.param(lambda c, s: _order(c), id="empty-items"),
    pytest.param(_many_items, id="101-items"),
    pytest.param(lambda c, s: _order("", _item(s)), id="customer-empty"),
    pytest.param(lambda c, s: _order("c" * 65, _item(s)), id="customer-65-chars"),
    pytest.param(lambda c, s: _order(c, _item("SKU 1")), id="sku-with-space"),
    pytest.param(lambda c, s: _order(c, _item("S" * 65)), id="sku-65-chars"),
    pytest.param(lambda c, s: _order(c, _item("")), id="sku-empty"),
    pytest.param(lambda c, s: _order(c, _item(s, quantity=0)), id="quantity-0"),
    pytest.param(lambda c, s: _order(c, _item(s, quantity=10_001)), id="quantity-10001"),
    pytest.param(lambda c, s: _order(c, _item(s, quantity="2")), id="quantity-string"),
    pytest.param(lambda c, s: _order(c, _item(s, unit_price_cents=-1)), id="price-negative"),
    pytest.param(
        lambda c, s: _order(c, _item(s, unit_price_cents=1_000_000_001)), id="price-too-high"
    ),
    pytest.param(lambda c, s: _order(c, _item(s), currency="usd"), id="currency-lowercase"),
    pytest.param(lambda c, s: _order(c, _item(s), currency="US"), id="currency-two-letters"),
    pytest.param(lambda c, s: {"items": [_item(s)]}, id="customer-missing"),
    pytest.param(lambda c, s: {"customer_id": c}, id="items-missing"),
    pytest.param(lambda c, s: [_order(c, _item(s))], id="body-is-a-list"),
]


@pytest.mark.parametrize("make_body", INVALID_ORDERS)
async def test_invalid_order_is_422_and_writes_nothing(
    api: httpx.AsyncClient, sessions: Sessions, make_body: Callable[[str, str], Any]
) -> None:
    customer = _customer()
    before = await _counts(sessions)

    response = await api.post("/orders", json=make_body(customer, _sku()))

    _assert_error(response, 422)
    assert await _counts(sessions) == before
    assert await _orders_and_sagas_of(sessions, customer) == (0, 0)


async def test_malformed_json_is_422_and_writes_nothing(
    api: httpx.AsyncClient, sessions: Sessions
) -> None:
    before = await _counts(sessions)

    response = await api.post(
        "/orders",
        content=b'{"customer_id": "c-1", "items": [',
        headers={"Content-Type": "application/json"},
    )

    _assert_error(response, 422)
    assert await _counts(sessions) == before


async def test_body_of_exactly_64_kib_is_accepted(
    api: httpx.AsyncClient, sessions: Sessions
) -> None:
    customer = _customer()
    content = _padded(_order(customer, _item(_sku())), MAX_BODY)

    response = await api.post(
        "/orders", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 202, response.text
    assert await _orders_and_sagas_of(sessions, customer) == (1, 1)


async def test_body_over_64_kib_with_content_length_is_413(
    api: httpx.AsyncClient, sessions: Sessions
) -> None:
    customer = _customer()
    content = _padded(_order(customer, _item(_sku())), MAX_BODY + 1)
    before = await _counts(sessions)

    response = await api.post(
        "/orders", content=content, headers={"Content-Type": "application/json"}
    )

    _assert_error(response, 413)
    assert await _counts(sessions) == before
    assert await _orders_and_sagas_of(sessions, customer) == (0, 0)


async def _chunks(content: bytes, size: int = 8 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


async def test_chunked_body_under_the_limit_is_accepted(
    api: httpx.AsyncClient, sessions: Sessions
) -> None:
    customer = _customer()
    content = _padded(_order(customer, _item(_sku())), 20 * 1024)

    request = api.build_request(
        "POST", "/orders", content=_chunks(content), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await api.send(request)

    assert response.status_code == 202, response.text
    assert await _orders_and_sagas_of(sessions, customer) == (1, 1)


async def test_chunked_body_over_64_kib_is_413(api: httpx.AsyncClient, sessions: Sessions) -> None:
    customer = _customer()
    content = _padded(_order(customer, _item(_sku())), MAX_BODY + 8 * 1024)
    before = await _counts(sessions)

    request = api.build_request(
        "POST", "/orders", content=_chunks(content), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in request.headers
    response = await api.send(request)

    _assert_error(response, 413)
    assert await _counts(sessions) == before
    assert await _orders_and_sagas_of(sessions, customer) == (0, 0)


# --- Idempotency-Key -------------------------------------------------------------------


async def test_same_key_and_body_replays_the_first_answer(
    api: httpx.AsyncClient, sessions: Sessions
) -> None:
    customer, key = _customer(), f"key-{_uid()}"
    body = _order(customer, _item(_sku()))

    first = await api.post("/orders", json=body, headers={"Idempotency-Key": key})
    second = await api.post("/orders", json=body, headers={"Idempotency-Key": key})

    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert await _orders_and_sagas_of(sessions, customer) == (1, 1)


async def test_same_key_with_another_body_is_409(
    api: httpx.AsyncClient, sessions: Sessions
) -> None:
    customer, other, key = _customer(), _customer(), f"key-{_uid()}"
    sku = _sku()
    first = await _place(api, _order(customer, _item(sku)), **{"Idempotency-Key": key})

    conflict = await api.post(
        "/orders", json=_order(other, _item(sku)), headers={"Idempotency-Key": key}
    )

    _assert_error(conflict, 409)
    assert await _orders_and_sagas_of(sessions, other) == (0, 0)
    # The key still stands for its first body.
    again = await _place(api, _order(customer, _item(sku)), **{"Idempotency-Key": key})
    assert again == first
    assert await _orders_and_sagas_of(sessions, customer) == (1, 1)


async def test_concurrent_posts_with_one_key_make_one_order(
    api: httpx.AsyncClient, sessions: Sessions
) -> None:
    customer, key = _customer(), f"key-{_uid()}"
    body = _order(customer, _item(_sku()))

    responses = await asyncio.gather(
        *(api.post("/orders", json=body, headers={"Idempotency-Key": key}) for _ in range(20))
    )

    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses]
    assert len({(r.json()["order_id"], r.json()["saga_id"]) for r in responses}) == 1
    assert len({r.headers["location"] for r in responses}) == 1
    assert await _orders_and_sagas_of(sessions, customer) == (1, 1)


async def test_key_of_128_chars_is_accepted(api: httpx.AsyncClient, sessions: Sessions) -> None:
    customer = _customer()
    key = (_uid() * 13)[:128]

    await _place(api, _order(customer, _item(_sku())), **{"Idempotency-Key": key})

    assert await _orders_and_sagas_of(sessions, customer) == (1, 1)


@pytest.mark.parametrize(
    "key", [pytest.param("k" * 129, id="129-chars"), pytest.param("", id="empty")]
)
async def test_key_out_of_bounds_is_422_and_writes_nothing(
    api: httpx.AsyncClient, sessions: Sessions, key: str
) -> None:
    customer = _customer()
    before = await _counts(sessions)

    response = await api.post(
        "/orders", json=_order(customer, _item(_sku())), headers={"Idempotency-Key": key}
    )

    _assert_error(response, 422)
    assert await _counts(sessions) == before


# --- GET /orders/{id} ------------------------------------------------------------------


async def test_get_unknown_order_is_404(api: httpx.AsyncClient) -> None:
    _assert_error(await api.get(f"/orders/{uuid.uuid4()}"), 404)


async def test_get_order_with_a_bad_id_is_422(api: httpx.AsyncClient) -> None:
    _assert_error(await api.get("/orders/not-a-uuid"), 422)


async def test_get_order_has_the_full_shape(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    customer, sku_a, sku_b = _customer(), _sku(), _sku()
    await _stock(api, admin_headers, sku_a, 10)
    await _stock(api, admin_headers, sku_b, 10)
    await _credit(api, admin_headers, customer, 100_000)
    items = [
        _item(sku_a, quantity=2, unit_price_cents=1500),
        _item(sku_b, quantity=3, unit_price_cents=250),
    ]
    placed = await _place(api, _order(customer, *items, currency="EUR"))

    pending = (await api.get(f"/orders/{placed['order_id']}")).json()
    assert set(pending) == ORDER_KEYS
    assert pending["status"] in {"PENDING", "APPROVED"}
    assert (await _finished(api, placed["saga_id"]))["status"] == "COMPLETED"
    response = await api.get(f"/orders/{placed['order_id']}")

    assert response.status_code == 200, response.text
    order = response.json()
    assert set(order) == ORDER_KEYS
    assert order["order_id"] == placed["order_id"]
    assert order["saga_id"] == placed["saga_id"]
    assert order["customer_id"] == customer
    assert order["items"] == items
    assert order["total_cents"] == 2 * 1500 + 3 * 250
    assert order["currency"] == "EUR"
    assert order["status"] == "APPROVED"
    assert order["rejection_reason"] is None
    created, updated = (datetime.fromisoformat(order[k]) for k in ("created_at", "updated_at"))
    assert created.tzinfo is not None
    assert updated >= created


# --- GET /sagas/{id} -------------------------------------------------------------------


async def test_get_unknown_saga_is_404(api: httpx.AsyncClient) -> None:
    _assert_error(await api.get(f"/sagas/{uuid.uuid4()}"), 404)


async def test_get_saga_with_a_bad_id_is_422(api: httpx.AsyncClient) -> None:
    _assert_error(await api.get("/sagas/not-a-uuid"), 422)


async def test_saga_lists_every_step_in_order_while_running(
    api: httpx.AsyncClient, admin_headers: dict[str, str], system: System
) -> None:
    customer, sku = _customer(), _sku()
    await _stock(api, admin_headers, sku, 10)
    await _credit(api, admin_headers, customer, 100_000)
    # Without a payment worker the saga is held, deterministically, at its second step.
    system.stop("payment")
    try:
        placed = await _place(api, _order(customer, _item(sku)))
        first = await _saga(api, placed["saga_id"])
        assert [s["name"] for s in first["steps"]] == STEPS
        running = await wait_for(
            lambda: _saga(api, placed["saga_id"]),
            until=lambda s: s["current_step"] == "authorize_payment",
            what="saga waiting on payment",
        )
    finally:
        system.start("payment", "worker", "payment")

    assert set(running) == SAGA_KEYS
    assert running["saga_id"] == placed["saga_id"]
    assert running["order_id"] == placed["order_id"]
    assert running["saga_type"] == "order_fulfillment"
    assert running["status"] == "RUNNING"
    assert running["failure_reason"] is None
    assert [s["name"] for s in running["steps"]] == STEPS
    assert all(set(s) == STEP_KEYS for s in running["steps"])
    assert [s["status"] for s in running["steps"]] == ["SUCCEEDED", "RUNNING", "PENDING", "PENDING"]
    reserve = running["steps"][0]
    assert reserve["attempts"] == 1
    assert reserve["started_at"] is not None
    assert reserve["finished_at"] is not None
    assert reserve["error"] is None

    done = await _finished(api, placed["saga_id"])
    assert done["status"] == "COMPLETED"
    assert [s["name"] for s in done["steps"]] == STEPS
    assert [s["status"] for s in done["steps"]] == ["SUCCEEDED"] * 4


# --- admin -----------------------------------------------------------------------------

BAD_AUTH = [
    pytest.param({}, id="missing"),
    pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-token"),
    pytest.param({"Authorization": f"Basic {ADMIN_TOKEN}"}, id="basic-scheme"),
    pytest.param({"Authorization": ADMIN_TOKEN}, id="no-scheme"),
]


@pytest.mark.parametrize("headers", BAD_AUTH)
async def test_admin_inventory_refuses_bad_auth(
    api: httpx.AsyncClient, admin_headers: dict[str, str], headers: dict[str, str]
) -> None:
    sku = _sku()

    _assert_error(await api.get(f"/admin/inventory/{sku}", headers=headers), 401)
    put = await api.put(f"/admin/inventory/{sku}", json={"available": 5}, headers=headers)

    _assert_error(put, 401)
    _assert_error(await api.get(f"/admin/inventory/{sku}", headers=admin_headers), 404)


@pytest.mark.parametrize("headers", BAD_AUTH)
async def test_admin_customers_refuses_bad_auth(
    api: httpx.AsyncClient, admin_headers: dict[str, str], headers: dict[str, str]
) -> None:
    customer = _customer()

    _assert_error(await api.get(f"/admin/customers/{customer}", headers=headers), 401)
    put = await api.put(
        f"/admin/customers/{customer}", json={"credit_limit_cents": 5}, headers=headers
    )

    _assert_error(put, 401)
    _assert_error(await api.get(f"/admin/customers/{customer}", headers=admin_headers), 404)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"available": -1}, id="negative"),
        pytest.param({"available": 5, "reserved": 0}, id="unknown-field"),
        pytest.param({"available": "5"}, id="string"),
        pytest.param({}, id="missing"),
    ],
)
async def test_put_inventory_invalid_is_422(
    api: httpx.AsyncClient, admin_headers: dict[str, str], body: Body
) -> None:
    sku = _sku()

    _assert_error(await api.put(f"/admin/inventory/{sku}", json=body, headers=admin_headers), 422)

    _assert_error(await api.get(f"/admin/inventory/{sku}", headers=admin_headers), 404)


async def test_put_customer_negative_limit_is_422(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    customer = _customer()
    put = await api.put(
        f"/admin/customers/{customer}", json={"credit_limit_cents": -1}, headers=admin_headers
    )

    _assert_error(put, 422)
    _assert_error(await api.get(f"/admin/customers/{customer}", headers=admin_headers), 404)


async def test_get_unknown_sku_is_404(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    _assert_error(await api.get(f"/admin/inventory/{_sku()}", headers=admin_headers), 404)


async def test_inventory_put_then_get(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sku = _sku()

    assert await _stock(api, admin_headers, sku, 7) == {"sku": sku, "available": 7, "reserved": 0}
    assert await _stock(api, admin_headers, sku, 0) == {"sku": sku, "available": 0, "reserved": 0}
    assert await _stock(api, admin_headers, sku, 12) == {"sku": sku, "available": 12, "reserved": 0}

    response = await api.get(f"/admin/inventory/{sku}", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"sku": sku, "available": 12, "reserved": 0}


async def test_put_inventory_keeps_reservations(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    customer, sku = _customer(), _sku()
    await _stock(api, admin_headers, sku, 10)
    await _credit(api, admin_headers, customer, 100_000)
    placed = await _place(api, _order(customer, _item(sku, quantity=3)))
    assert (await _finished(api, placed["saga_id"]))["status"] == "COMPLETED"
    reserved = {"sku": sku, "available": 7, "reserved": 3}
    assert (await api.get(f"/admin/inventory/{sku}", headers=admin_headers)).json() == reserved

    put = await _stock(api, admin_headers, sku, 42)

    assert put == {"sku": sku, "available": 42, "reserved": 3}
    got = (await api.get(f"/admin/inventory/{sku}", headers=admin_headers)).json()
    assert got == {"sku": sku, "available": 42, "reserved": 3}


async def test_customer_put_then_get(api: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    customer = _customer()
    expected = {"customer_id": customer, "credit_limit_cents": 2500, "authorized_cents": 0}

    assert await _credit(api, admin_headers, customer, 2500) == expected
    response = await api.get(f"/admin/customers/{customer}", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == expected

    changed = {**expected, "credit_limit_cents": 0}
    assert await _credit(api, admin_headers, customer, 0) == changed
    assert (await api.get(f"/admin/customers/{customer}", headers=admin_headers)).json() == changed


# --- health ----------------------------------------------------------------------------


async def test_healthz_is_200(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).status_code == 200


async def test_readyz_is_200_with_postgres_and_rabbitmq_up_naming_the_node(
    api: httpx.AsyncClient, system: System
) -> None:
    response = await api.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "status": "ready",
        "postgres": "up",
        "rabbitmq": "up",
        "rabbitmq_node": node_address(system.settings.amqp_nodes[0]),
    }
