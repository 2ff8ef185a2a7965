"""The notification schema: messages recorded for customers."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)

from sagaway.outbox.tables import inbox_table, outbox_table

metadata = MetaData(schema="notification")

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("saga_id", Uuid, nullable=False),
    Column("order_id", Uuid, nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("template", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A retried attempt (a new message id) must not tell the customer twice.
    UniqueConstraint("saga_id", "template", name="uq_notifications_saga_template"),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
