"""``/healthz`` (the process runs) and ``/readyz`` (its dependencies answer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sagaway.probes import broker_problem, database_problem

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {"status": "ready", "postgres": "up", "rabbitmq": "up"}
                }
            }
        },
        503: {
            "description": "PostgreSQL or RabbitMQ unreachable",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "rabbitmq: AMQPConnectionError",
                        "postgres": "up",
                        "rabbitmq": "down",
                    }
                }
            },
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    """200 when PostgreSQL and RabbitMQ answer, else 503 naming which does not."""
    db, broker = await asyncio.gather(
        database_problem(request.app.state.db_engine),
        broker_problem(request.app.state.settings.amqp_url),
    )
    problems = [p for p in (db, broker) if p]
    if problems:
        return JSONResponse(
            status_code=503,
            content={
                "detail": "; ".join(problems),
                "postgres": "down" if db else "up",
                "rabbitmq": "down" if broker else "up",
            },
        )
    return JSONResponse({"status": "ready", "postgres": "up", "rabbitmq": "up"})
