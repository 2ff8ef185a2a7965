"""Writes messages into an outbox inside the caller's transaction."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.outbox.deferred import defer_insert
from sagaway.outbox.envelope import OutgoingMessage
from sagaway.outbox.handoff import claim_columns
from sagaway.outbox.tracing import inject


class OutboxWriter:
    """Adds rows to one outbox table; never commits and never talks to the broker.

    The row becomes visible to the relay only when the caller's transaction commits,
    so a message exists if and only if the state change that produced it exists.
    """

    def __init__(self, table: Table) -> None:
        self._table = table

    @property
    def table(self) -> Table:
        """The outbox table this writer fills."""
        return self._table

    async def add(self, session: AsyncSession, *messages: OutgoingMessage) -> None:
        """Insert ``messages`` in the session's current transaction, in order.

        The rows are sent with the commit, together with every other row the
        transaction wrote to this outbox, as one statement (see ``outbox.deferred``).
        Each row carries the current trace context, so whoever consumes the message
        continues the trace of the work that wrote it.
        """
        if not messages:
            return
        traceparent = inject()
        # Rows of a consumer's transaction come claimed by its process, which publishes
        # them itself after the commit (see ``outbox.handoff``).
        claim = claim_columns(session)
        defer_insert(
            session,
            self._table,
            [
                {
                    "message_id": m.envelope.message_id,
                    "saga_id": m.envelope.saga_id,
                    "correlation_id": m.envelope.correlation_id,
                    "message_type": m.envelope.message_type,
                    "exchange": m.exchange,
                    "routing_key": m.routing_key,
                    "body": m.envelope.to_bytes(),
                    "traceparent": traceparent,
                    **claim,
                }
                for m in messages
            ],
        )
