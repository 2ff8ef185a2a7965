"""Remembers which messages a consumer already processed."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from outbox.envelope import Envelope


class Inbox:
    """Deduplicates deliveries per consumer by ``message_id``."""

    def __init__(self, table: Table, consumer: str) -> None:
        self._table = table
        self._consumer = consumer

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
        result = await session.execute(
            insert(self._table)
            .values(
                consumer=self._consumer,
                message_id=envelope.message_id,
                message_type=envelope.message_type,
            )
            .on_conflict_do_nothing(index_elements=["consumer", "message_id"])
            .returning(self._table.c.message_id)
        )
        return result.first() is not None
