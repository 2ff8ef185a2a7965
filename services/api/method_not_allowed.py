"""405 answers whose ``Allow`` header names every method the resource supports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def allowed_methods(openapi: Mapping[str, Any], path: str) -> list[str] | None:
    """The methods the document gives ``path``, or None when no documented path matches.

    Args:
        openapi: the application's OpenAPI document.
        path: a request path.

    Returns:
        Upper-case method names, sorted; None for a path the document does not describe.
    """
    found: set[str] = set()
    matched = False
    for template, item in openapi.get("paths", {}).items():
        if _template(template).fullmatch(path):
            matched = True
            found.update(m.upper() for m in item if m in _METHODS)
    return sorted(found) if matched else None


@cache
def _template(template: str) -> re.Pattern[str]:
    # "/admin/inventory/{sku}" matches "/admin/inventory/" followed by one segment.
    parts = re.split(r"\{[^/{}]+\}", template)
    return re.compile("[^/]+".join(re.escape(p) for p in parts))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """Answer a 405 with every method of the path in ``Allow``.

    Starlette answers from the first route whose path matches and names only that
    route's methods, but a resource is often several routes (``GET`` and ``PUT`` of
    ``/admin/inventory/{sku}``). The OpenAPI document lists them all; a path it does not
    describe (the docs, ``/ui``) keeps Starlette's answer.
    """
    app: FastAPI = request.app
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    methods = allowed_methods(app.openapi(), request.url.path)
    if methods is not None:
        headers["Allow"] = ", ".join(methods)
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)
