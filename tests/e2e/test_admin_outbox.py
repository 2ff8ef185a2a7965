"""Operators see outbox messages the relay gave up on, and can send them again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.application import Names
from sagaway.orchestrator.tables import outbox
from sagaway.outbox.envelope import Envelope
from tests.e2e.conftest import System
from tests.support import wait_for


@pytest.fixture
async def dead_row(
    system: System, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Envelope]:
    """A command the relay gave up on: addressed to a routing key nothing is bound to."""
    envelope = Envelope(
        message_type="Undeliverable", saga_id=uuid.uuid4(), correlation_id=uuid.uuid4()
    )
    async with sessions() as session, session.begin():
        await session.execute(
            insert(outbox).values(
                message_id=envelope.message_id,
                saga_id=envelope.saga_id,
                correlation_id=envelope.correlation_id,
                message_type=envelope.message_type,
                exchange=Names(system.settings.namespace).commands_exchange,
                routing_key="nobody-listens",
                body=envelope.to_bytes(),
                attempts=10,
                last_error="broker refused message: NO_ROUTE",
                dead_at=func.now(),
            )
        )
    yield envelope
    async with sessions() as session, session.begin():
        await session.execute(delete(outbox).where(outbox.c.message_id == envelope.message_id))


async def test_dead_outbox_messages_are_listed_and_can_be_sent_again(
    api: httpx.AsyncClient,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    dead_row: Envelope,
) -> None:
    listed = await api.get("/admin/outbox/dead", headers=admin_headers)
    assert listed.status_code == 200
    mine = [m for m in listed.json() if m["message_id"] == str(dead_row.message_id)]
    assert len(mine) == 1
    assert mine[0]["outbox"] == "orchestrator"
    assert mine[0]["attempts"] == 10
    assert "NO_ROUTE" in mine[0]["last_error"]

    assert (await api.get("/admin/outbox/dead")).status_code == 401
    requeued = await api.post(
        f"/admin/outbox/dead/{dead_row.message_id}/retry", headers=admin_headers
    )
    assert requeued.status_code == 202
    assert requeued.json() == {"message_id": str(dead_row.message_id), "outbox": "orchestrator"}

    # The relay tries it again: still unroutable, so it fails afresh and backs off.
    async def row() -> Any:
        async with sessions() as session:
            return (
                await session.execute(
                    select(outbox.c.attempts, outbox.c.dead_at, outbox.c.published_at).where(
                        outbox.c.message_id == dead_row.message_id
                    )
                )
            ).one()

    retried = await wait_for(row, until=lambda r: r.attempts >= 1, what="relay tried again")
    assert retried.attempts < 10 and retried.dead_at is None and retried.published_at is None
    gone = await api.get("/admin/outbox/dead", headers=admin_headers)
    assert str(dead_row.message_id) not in {m["message_id"] for m in gone.json()}
    again = await api.post(f"/admin/outbox/dead/{dead_row.message_id}/retry", headers=admin_headers)
    assert again.status_code == 404
