"""The payment schema: customers' credit and one authorization per saga."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    text,
)

from sagaway.outbox.tables import inbox_table, outbox_table

metadata = MetaData(schema="payment")

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("credit_limit_cents", BigInteger, nullable=False),
    Column("authorized_cents", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("credit_limit_cents >= 0", name="credit_limit_not_negative"),
    CheckConstraint("authorized_cents >= 0", name="authorized_not_negative"),
)

# One row per saga, like inventory's reservations: retries reuse the authorization and
# a void leaves a tombstone that a late attempt cannot get past.
authorizations = Table(
    "authorizations",
    metadata,
    Column("saga_id", Uuid, primary_key=True),
    Column("order_id", Uuid, nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
