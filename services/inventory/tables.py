"""The inventory schema: stock per SKU and one reservation per saga."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from sagaway.outbox.tables import inbox_table, outbox_table

metadata = MetaData(schema="inventory")

stock = Table(
    "stock",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False, server_default=text("0")),
    Column("reserved", Integer, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("available >= 0", name="available_not_negative"),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
)

# Keyed by saga, not by message: every attempt of one saga's reservation finds the
# same row, so a retry reuses the first reservation and a release leaves a tombstone
# that bars a late attempt from reserving afterwards.
reservations = Table(
    "reservations",
    metadata,
    Column("saga_id", Uuid, primary_key=True),
    Column("order_id", Uuid, nullable=False),
    Column("items", JSONB, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
