"""Reusable transactional outbox and inbox on PostgreSQL and RabbitMQ.

Imports nothing from ``orchestrator`` or ``services``: any service can own an outbox
(its rows written in the caller's transaction) and an inbox (the messages it already
processed), and the relay moves outbox rows to the broker.
"""

from sagaway.outbox.envelope import Envelope, OutgoingMessage
from sagaway.outbox.inbox import Inbox
from sagaway.outbox.tables import inbox_table, outbox_table
from sagaway.outbox.writer import OutboxWriter

__all__ = ["Envelope", "Inbox", "OutboxWriter", "OutgoingMessage", "inbox_table", "outbox_table"]
