"""Readiness probes of the two things every component needs."""

from __future__ import annotations

import asyncio

import aio_pika
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

PROBE_TIMEOUT_S = 3.0


async def database_problem(engine: AsyncEngine) -> str | None:
    """None when PostgreSQL answers, else why not (no credentials in the text)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        return "postgres: no answer within 3s"
    except Exception as exc:
        return f"postgres: {type(exc).__name__}"
    return None


async def broker_problem(amqp_url: str) -> str | None:
    """None when RabbitMQ accepts a connection, else why not."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            connection = await aio_pika.connect(amqp_url)
            await connection.close()
    except TimeoutError:
        return "rabbitmq: no answer within 3s"
    except Exception as exc:
        return f"rabbitmq: {type(exc).__name__}"
    return None
