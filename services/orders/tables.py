"""The orders schema: orders and the idempotency keys of ``POST /orders``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(schema="orders")

orders = Table(
    "orders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("saga_id", Uuid, nullable=False, unique=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("items", JSONB, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("rejection_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("order_id", Uuid, nullable=False),
    Column("saga_id", Uuid, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
