"""``/healthz`` (the process runs) and ``/readyz`` (its dependencies answer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sagaway.outbox.probes import broker_probe, database_problem

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
                    "example": {
                        "status": "ready",
                        "postgres": "up",
                        "rabbitmq": "up",
                        "rabbitmq_node": "10.0.0.7:5672",
                    }
                }
            }
        },
        503: {
            "description": "PostgreSQL or RabbitMQ unreachable",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "rabbitmq: 10.0.0.7:5672 AMQPConnectionError",
                        "postgres": "up",
                        "rabbitmq": "down",
                        "rabbitmq_node": None,
                    }
                }
            },
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    """200 when PostgreSQL and RabbitMQ answer, else 503 naming which does not;
    ``rabbitmq_node`` is the RabbitMQ node that answered (``host:port``), tried in the
    order ``SAGAWAY_AMQP_URL`` lists them."""
    db, broker = await asyncio.gather(
        database_problem(request.app.state.db_engine),
        broker_probe(request.app.state.settings.amqp_url),
    )
    problems = [p for p in (db, broker.problem) if p]
    states = {
        "postgres": "down" if db else "up",
        "rabbitmq": "down" if broker.problem else "up",
        "rabbitmq_node": broker.node,
    }
    if problems:
        return JSONResponse(status_code=503, content={"detail": "; ".join(problems), **states})
    return JSONResponse({"status": "ready", **states})
