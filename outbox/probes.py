"""Readiness probes of the two things every component needs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aio_pika
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.outbox.broker_nodes import node_address, parse_nodes

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


@dataclass(frozen=True, slots=True)
class BrokerProbe:
    """Which RabbitMQ node answered a probe (``host:port``), or why none did."""

    node: str | None
    problem: str | None


async def broker_probe(amqp_url: str) -> BrokerProbe:
    """Try the nodes of ``amqp_url`` in the order given; the first that accepts a
    connection is the node reported. Each node gets an equal share of the probe's
    time, so one that does not answer cannot use up the others' time."""
    nodes = parse_nodes(amqp_url)
    share = PROBE_TIMEOUT_S / len(nodes)
    problems: list[str] = []
    for url in nodes:
        try:
            async with asyncio.timeout(share):
                connection = await aio_pika.connect(url)
                await connection.close()
        except TimeoutError:
            problems.append(f"{node_address(url)} no answer within {share:g}s")
            continue
        except Exception as exc:
            # Type names only: a driver's message can carry the URL.
            problems.append(f"{node_address(url)} {type(exc).__name__}")
            continue
        return BrokerProbe(node=node_address(url), problem=None)
    return BrokerProbe(node=None, problem="rabbitmq: " + "; ".join(problems))
