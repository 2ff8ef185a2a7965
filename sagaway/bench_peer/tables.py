"""The peer's application database: the same rows sagaway's order saga keeps.

One database holds what sagaway splits over its orders, inventory, payment and
notification schemas: the peer is one process, as a DBOS application is. The saga's id
is its order's id (the DBOS workflow id), so reservations, authorizations and
notifications are keyed by order.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# ``stocked`` is available + reserved as the last admin PUT left it: nothing but that PUT
# may change the sum, which is what the invariant check compares.
stock = Table(
    "stock",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False, server_default=text("0")),
    Column("reserved", Integer, nullable=False, server_default=text("0")),
    Column("stocked", Integer, nullable=False, server_default=text("0")),
    CheckConstraint("available >= 0", name="available_not_negative"),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("credit_limit_cents", BigInteger, nullable=False),
    Column("authorized_cents", BigInteger, nullable=False, server_default=text("0")),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("items", JSONB, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("rejection_reason", String(64)),
    Column("idempotency_key", String(128), unique=True),
    Column("request_hash", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per saga whatever the step's attempts: a retried reservation finds its own row,
# and a release leaves a tombstone, so compensation is idempotent in both modes.
reservations = Table(
    "reservations",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("items", JSONB, nullable=False),
    Column("status", String(16), nullable=False),
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("order_id", Uuid, nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("template", String(32), nullable=False),
    Column("text", String(512), nullable=False),
    UniqueConstraint("order_id", "template", name="uq_notifications_order_template"),
)
