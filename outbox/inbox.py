"""Remembers which messages a consumer already processed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import String, Table, Uuid, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from outbox.envelope import Envelope


class Inbox:
    """Deduplicates deliveries per consumer by ``message_id``."""

    def __init__(self, table: Table, consumer: str) -> None:
        self._consumer = consumer
        self._record_many = (
            insert(table)
            .from_select(
                ["consumer", "message_id", "message_type"],
                select(
                    literal(consumer, String).label("consumer"),
                    func.unnest(bindparam("ids", type_=ARRAY(Uuid))).label("message_id"),
                    func.unnest(bindparam("types", type_=ARRAY(String))).label("message_type"),
                ),
            )
            .on_conflict_do_nothing(index_elements=["consumer", "message_id"])
            .returning(table.c.message_id)
        )

    @property
    def consumer(self) -> str:
        """The consumer name the records are kept under."""
        return self._consumer

    async def record(self, session: AsyncSession, envelope: Envelope) -> bool:
        """Record ``envelope`` as processed in the current transaction.

        Returns False when it was processed before. A concurrent delivery of the same
        message waits on the primary key until the first transaction ends, then sees
        the conflict, so two consumers can never both apply it.
        """
        return envelope.message_id in await self.record_many(session, [envelope])

    async def record_many(
        self, session: AsyncSession, envelopes: Sequence[Envelope]
    ) -> set[uuid.UUID]:
        """Record a batch in one statement; returns the ids not processed before.

        Rows go in ``message_id`` order, so two consumers recording overlapping batches
        (a redelivery) take the primary-key locks in the same order and cannot deadlock.
        """
        if not envelopes:
            return set()
        ordered = sorted(envelopes, key=lambda e: e.message_id)
        # Arrays unnested server-side: one statement text whatever the batch size, so
        # it is compiled and prepared once.
        result = await session.execute(
            self._record_many,
            {
                "ids": [e.message_id for e in ordered],
                "types": [e.message_type for e in ordered],
            },
        )
        return {r.message_id for r in result}
