"""The OpenAPI document and the server agree (SPEC "HTTP API"), rule by rule, in memory.

The end-to-end proof is schemathesis against the running API
(``tests/e2e/test_openapi_fuzz.py``); these pin each rule it found broken.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sagaway.outbox.settings import Settings
from sagaway.services.api.app import create_app
from sagaway.services.api.method_not_allowed import allowed_methods
from sagaway.services.api.schemas import (
    CURSOR_EXAMPLE,
    CustomerUpdate,
    InventoryUpdate,
    OrderItem,
)
from sagaway.services.ops.sagas import CURSOR_PATTERN, BadCursor, decode_cursor, encode_cursor
from sagaway.services.order_app import order_app

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(admin_token="t"), order_app)


@pytest.fixture(scope="module")
def openapi(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


# --- integers as JSON Schema means them ------------------------------------------------


@pytest.mark.parametrize("value", [2, 2.0, 2e0, 77632.0, -0.0])
def test_an_integral_number_is_an_integer(value: float) -> None:
    accepted = InventoryUpdate.model_validate({"available": value})

    assert accepted.available == int(value)
    assert type(accepted.available) is int


@pytest.mark.parametrize("value", [2.5, "2", True, None, 1e300, float("inf")])
def test_anything_else_is_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        InventoryUpdate.model_validate({"available": value})


def test_integer_fields_stay_integers_with_their_bounds_in_the_document() -> None:
    item = OrderItem.model_json_schema()["properties"]
    assert (
        item["quantity"] | {"type": "integer", "minimum": 1, "maximum": 10_000}
        == (item["quantity"])
    )
    assert item["unit_price_cents"]["type"] == "integer"
    assert item["unit_price_cents"]["minimum"] == 0
    assert InventoryUpdate.model_json_schema()["properties"]["available"]["minimum"] == 0
    credit = CustomerUpdate.model_json_schema()["properties"]["credit_limit_cents"]
    assert (credit["type"], credit["minimum"]) == ("integer", 0)


# --- cursors: every string of the documented form is one ------------------------------


def test_a_cursor_points_exactly_past_its_saga() -> None:
    created_at = datetime(2025, 3, 1, 12, 0, 0, 120_000, tzinfo=UTC)
    saga_id = uuid.UUID("5b1d3c7a-9e2f-4b8a-8c6d-1a2b3c4d5e6f")

    cursor = encode_cursor(created_at, saga_id)

    assert cursor == CURSOR_EXAMPLE
    assert decode_cursor(cursor) == (created_at, saga_id)


@settings(max_examples=300, derandomize=True, database=None)
@given(st.from_regex(CURSOR_PATTERN, fullmatch=True))
def test_every_string_of_the_documented_form_decodes(cursor: str) -> None:
    created_at, saga_id = decode_cursor(cursor)

    micros, hex_id = cursor.split("-")
    assert encode_cursor(created_at, saga_id) == f"{int(micros)}-{hex_id}"


@pytest.mark.parametrize(
    "cursor",
    ["", "abc", "1-" + "0" * 31, "1-" + "A" * 32, "9" * 18 + "-" + "0" * 32, "-" + "0" * 32],
)
def test_any_other_string_is_not_a_cursor(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


def test_the_document_gives_the_cursor_its_form(openapi: dict[str, Any]) -> None:
    for path in ("/admin/sagas", "/admin/sagas/search"):
        (cursor,) = [
            p for p in openapi["paths"][path]["get"]["parameters"] if p["name"] == "cursor"
        ]
        schemas = cursor["schema"].get("anyOf", [cursor["schema"]])
        assert {"type": "string", "pattern": CURSOR_PATTERN} in [
            {k: v for k, v in s.items() if k in ("type", "pattern")} for s in schemas
        ]


# --- every status an operation can answer is documented --------------------------------


def _operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
    ]


def test_an_operation_with_a_body_documents_how_a_body_is_refused(
    openapi: dict[str, Any],
) -> None:
    with_body = [(m, p, o) for m, p, o in _operations(openapi) if "requestBody" in o]

    assert len(with_body) == 4
    for method, path, operation in with_body:
        assert {"400", "408", "413", "422"} <= set(operation["responses"]), (method, path)


def test_admin_operations_declare_the_bearer_token_and_its_401(openapi: dict[str, Any]) -> None:
    assert openapi["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <SAGAWAY_ADMIN_TOKEN>`",
    }
    for method, path, operation in _operations(openapi):
        admin = path.startswith("/admin/")
        assert (operation.get("security") == [{"adminToken": []}]) is admin, (method, path)
        assert ("401" in operation["responses"]) is admin, (method, path)


def test_operations_on_the_database_document_503(openapi: dict[str, Any]) -> None:
    without = {"/healthz", "/asyncapi.json"}
    for method, path, operation in _operations(openapi):
        assert ("503" in operation["responses"]) is (path not in without), (method, path)


# --- 405 names every method of the resource -----------------------------------------


def test_allowed_methods_are_those_the_document_gives_the_path(openapi: dict[str, Any]) -> None:
    assert allowed_methods(openapi, "/admin/inventory/SKU-1") == ["GET", "PUT"]
    assert allowed_methods(openapi, "/orders") == ["POST"]
    assert allowed_methods(openapi, "/sagas/x/history") == ["GET"]
    assert allowed_methods(openapi, "/admin/inventory/a/b") is None
    assert allowed_methods(openapi, "/nowhere") is None


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/admin/inventory/SKU-1", "GET, PUT"),
        ("DELETE", "/admin/customers/c-1", "GET, PUT"),
        ("PATCH", "/admin/faults/payment", "GET, PUT"),
        ("PUT", "/orders", "POST"),
        ("POST", "/openapi.json", "GET, HEAD"),  # not in the document: Starlette's own
    ],
)
async def test_a_405_lists_every_method_of_the_path(
    app: FastAPI, method: str, path: str, allow: str
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sagaway") as client:
        response = await client.request(method, path)

    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == set(allow.split(", "))
    assert response.json() == {"detail": "Method Not Allowed"}
