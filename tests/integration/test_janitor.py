"""The janitor bounds the outbox and inbox: what is past its retention goes, the rest stays.

The tables are an outbox and an inbox of a schema of the test's own (dropped afterwards),
so no relay or janitor of another test sees them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import MetaData, Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.outbox.janitor import Janitor, Retention
from sagaway.outbox.tables import inbox_table, outbox_table


@dataclass(frozen=True)
class Tables:
    """An outbox and an inbox of the test's own."""

    outbox: Table
    inbox: Table


@pytest.fixture
async def tables(db: AsyncEngine) -> AsyncIterator[Tables]:
    schema = f"janitor_{uuid.uuid4().hex[:8]}"
    metadata = MetaData(schema=schema)
    found = Tables(outbox=outbox_table(metadata), inbox=inbox_table(metadata))
    async with db.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(metadata.create_all)
    try:
        yield found
    finally:
        async with db.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def _outbox_row(*, age_s: float, published: bool, dead: bool = False) -> dict[str, object]:
    at = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, age_s)
    return {
        "message_id": uuid.uuid4(),
        "saga_id": uuid.uuid4(),
        "correlation_id": uuid.uuid4(),
        "message_type": "Test",
        "exchange": "x",
        "routing_key": "k",
        "body": b"{}",
        "created_at": at,
        "published_at": at if published else None,
        "dead_at": at if dead else None,
    }


async def test_a_sweep_deletes_what_is_past_retention_and_keeps_the_rest(
    db: AsyncEngine, tables: Tables
) -> None:
    outbox, inbox = tables.outbox, tables.inbox
    async with db.begin() as conn:
        # Published two hours ago: past a one-hour retention (more than a batch of them).
        for _ in range(5):
            await conn.execute(insert(outbox).values(_outbox_row(age_s=7200, published=True)))
        # Published a minute ago; never published; parked as dead: all stay.
        await conn.execute(insert(outbox).values(_outbox_row(age_s=60, published=True)))
        await conn.execute(insert(outbox).values(_outbox_row(age_s=7200, published=False)))
        await conn.execute(
            insert(outbox).values(_outbox_row(age_s=7200, published=False, dead=True))
        )
        for age_s in (7200, 7200, 7200, 60):
            await conn.execute(
                insert(inbox).values(
                    consumer="c",
                    message_id=uuid.uuid4(),
                    message_type="Test",
                    received_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, age_s),
                )
            )
    janitor = Janitor(
        engine=db,
        outboxes=[outbox],
        inboxes=[inbox],
        retention=Retention(outbox_s=3600, inbox_s=3600, batch=2),
    )

    assert await janitor.sweep() == 8

    async with db.connect() as conn:
        kept = (
            await conn.execute(
                select(
                    func.count().filter(outbox.c.published_at.is_not(None)),
                    func.count().filter(outbox.c.published_at.is_(None)),
                )
            )
        ).one()
        assert tuple(kept) == (1, 2)
        assert await conn.scalar(select(func.count()).select_from(inbox)) == 1
    assert await janitor.sweep() == 0
