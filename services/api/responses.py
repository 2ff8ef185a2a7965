"""Error answers as the OpenAPI document shows them: ``{"detail": ...}`` with examples.

Only documentation: the answers themselves come from ``HTTPException`` and FastAPI's
request validation. Routes use these in their ``responses={...}`` so every documented
error has a schema and an example.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from sagaway.services.api.body_limit import MAX_BODY_BYTES


class Problem(BaseModel):
    """An error answer."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "saga not found"}]})

    detail: str


class ValidationIssue(BaseModel):
    """One reason a request was refused."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """A request that does not fit the API: what is wrong, and where."""

    detail: list[ValidationIssue] | str


_INVALID_EXAMPLE: dict[str, Any] = {
    "detail": [
        {
            "loc": ["body", "items", 0, "quantity"],
            "msg": "Input should be greater than or equal to 1",
            "type": "greater_than_equal",
        }
    ]
}


def problem(description: str, detail: str) -> dict[str, Any]:
    """A documented error answer whose ``detail`` is ``detail``.

    Args:
        description: what the status means for this endpoint.
        detail: the ``detail`` text the endpoint answers with (the example).

    Returns:
        An entry for a route's ``responses``.
    """
    return {
        "model": Problem,
        "description": description,
        "content": {"application/json": {"example": {"detail": detail}}},
    }


def invalid(description: str = "Invalid request", example: Any = None) -> dict[str, Any]:
    """A documented 422: FastAPI's list of validation issues, or a single message.

    Args:
        description: what makes a request invalid for this endpoint.
        example: the body to show; a typical validation issue by default.

    Returns:
        An entry for a route's ``responses``.
    """
    return {
        "model": ValidationProblem,
        "description": description,
        "content": {
            "application/json": {"example": _INVALID_EXAMPLE if example is None else example}
        },
    }


UNAUTHORIZED = problem(
    "No or wrong admin token (`Authorization: Bearer <SAGAWAY_ADMIN_TOKEN>`)",
    "admin token missing or wrong",
)


def not_a_uuid(parameter: str) -> dict[str, Any]:
    """A documented 422 for a path parameter that must be a UUID.

    Args:
        parameter: the path parameter's name.

    Returns:
        An entry for a route's ``responses``.
    """
    return invalid(
        f"`{parameter}` is not a UUID",
        {
            "detail": [
                {
                    "loc": ["path", parameter],
                    "msg": "Input should be a valid UUID, invalid character: found `n` at 0",
                    "type": "uuid_parsing",
                }
            ]
        },
    )


UNAVAILABLE = problem("PostgreSQL unavailable; nothing was half-written", "database unavailable")
"""A 503: every route that reads or writes the database can answer it."""

NOT_JSON = problem(
    "The body could not be read as JSON: not UTF-8 text, or nested too deeply "
    "(a body that is text but not JSON is a 422)",
    "There was an error parsing the body",
)
"""A 400 from FastAPI's own body reading, for a route that takes a JSON body."""


BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: NOT_JSON,
    408: problem(
        "The body did not arrive whole within `SAGAWAY_API_BODY_TIMEOUT_S`",
        "request body not received within 30 seconds",
    ),
    413: problem(
        f"Body over {MAX_BODY_BYTES // 1024} KiB", f"request body exceeds {MAX_BODY_BYTES} bytes"
    ),
}
"""The error answers of every route that takes a JSON body, whatever it does with it."""
