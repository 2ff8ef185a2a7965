"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:03:53.570796
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SCHEMAS = ("orders", "sagas", "inventory", "payment", "notification")


def upgrade() -> None:
    # Each service owns a schema; Alembic's autogenerate does not create schemas.
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key"),
        schema="orders",
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("items", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("saga_id"),
        schema="orders",
    )
    op.create_index(
        op.f("ix_orders_orders_customer_id"),
        "orders",
        ["customer_id"],
        unique=False,
        schema="orders",
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("consumer", "message_id"),
        schema="sagas",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("correlation_id", sa.Uuid(), nullable=False),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column("exchange", sa.String(length=255), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
        schema="sagas",
    )
    op.create_index(
        "ix_sagas_outbox_saga_unpublished",
        "outbox",
        ["saga_id", "id"],
        unique=False,
        schema="sagas",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "ix_sagas_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        schema="sagas",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "sagas",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("saga_type", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("correlation_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("pending_message_id", sa.Uuid(), nullable=True),
        sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.Column("steps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id"),
        schema="sagas",
    )
    op.create_index("ix_sagas_created", "sagas", ["created_at", "id"], unique=False, schema="sagas")
    op.create_index(
        "ix_sagas_status_created",
        "sagas",
        ["status", "created_at", "id"],
        unique=False,
        schema="sagas",
    )
    op.create_index(
        "ix_sagas_wake_at",
        "sagas",
        ["wake_at"],
        unique=False,
        schema="sagas",
        postgresql_where=sa.text("wake_at IS NOT NULL"),
    )
    op.create_table(
        "saga_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["saga_id"], ["sagas.sagas.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        schema="sagas",
    )
    op.create_index(
        "ix_saga_events_saga", "saga_events", ["saga_id", "id"], unique=False, schema="sagas"
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("consumer", "message_id"),
        schema="inventory",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("correlation_id", sa.Uuid(), nullable=False),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column("exchange", sa.String(length=255), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
        schema="inventory",
    )
    op.create_index(
        "ix_inventory_outbox_saga_unpublished",
        "outbox",
        ["saga_id", "id"],
        unique=False,
        schema="inventory",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "ix_inventory_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        schema="inventory",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "reservations",
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("items", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("saga_id"),
        schema="inventory",
    )
    op.create_table(
        "stock",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("available", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("reserved", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("available >= 0", name="available_not_negative"),
        sa.CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        sa.PrimaryKeyConstraint("sku"),
        schema="inventory",
    )
    op.create_table(
        "authorizations",
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("saga_id"),
        schema="payment",
    )
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("credit_limit_cents", sa.BigInteger(), nullable=False),
        sa.Column("authorized_cents", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("authorized_cents >= 0", name="authorized_not_negative"),
        sa.CheckConstraint("credit_limit_cents >= 0", name="credit_limit_not_negative"),
        sa.PrimaryKeyConstraint("customer_id"),
        schema="payment",
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("consumer", "message_id"),
        schema="payment",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("correlation_id", sa.Uuid(), nullable=False),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column("exchange", sa.String(length=255), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
        schema="payment",
    )
    op.create_index(
        "ix_payment_outbox_saga_unpublished",
        "outbox",
        ["saga_id", "id"],
        unique=False,
        schema="payment",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "ix_payment_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        schema="payment",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("consumer", "message_id"),
        schema="notification",
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("saga_id", "template", name="uq_notifications_saga_template"),
        schema="notification",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("correlation_id", sa.Uuid(), nullable=False),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column("exchange", sa.String(length=255), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
        schema="notification",
    )
    op.create_index(
        "ix_notification_outbox_saga_unpublished",
        "outbox",
        ["saga_id", "id"],
        unique=False,
        schema="notification",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "ix_notification_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        schema="notification",
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_notification_outbox_unpublished",
        table_name="outbox",
        schema="notification",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(
        "ix_notification_outbox_saga_unpublished",
        table_name="outbox",
        schema="notification",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox", schema="notification")
    op.drop_table("notifications", schema="notification")
    op.drop_table("inbox", schema="notification")
    op.drop_index(
        "ix_payment_outbox_unpublished",
        table_name="outbox",
        schema="payment",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(
        "ix_payment_outbox_saga_unpublished",
        table_name="outbox",
        schema="payment",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox", schema="payment")
    op.drop_table("inbox", schema="payment")
    op.drop_table("customers", schema="payment")
    op.drop_table("authorizations", schema="payment")
    op.drop_table("stock", schema="inventory")
    op.drop_table("reservations", schema="inventory")
    op.drop_index(
        "ix_inventory_outbox_unpublished",
        table_name="outbox",
        schema="inventory",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(
        "ix_inventory_outbox_saga_unpublished",
        table_name="outbox",
        schema="inventory",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox", schema="inventory")
    op.drop_table("inbox", schema="inventory")
    op.drop_index("ix_saga_events_saga", table_name="saga_events", schema="sagas")
    op.drop_table("saga_events", schema="sagas")
    op.drop_index(
        "ix_sagas_wake_at",
        table_name="sagas",
        schema="sagas",
        postgresql_where=sa.text("wake_at IS NOT NULL"),
    )
    op.drop_index("ix_sagas_status_created", table_name="sagas", schema="sagas")
    op.drop_index("ix_sagas_created", table_name="sagas", schema="sagas")
    op.drop_table("sagas", schema="sagas")
    op.drop_index(
        "ix_sagas_outbox_unpublished",
        table_name="outbox",
        schema="sagas",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(
        "ix_sagas_outbox_saga_unpublished",
        table_name="outbox",
        schema="sagas",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox", schema="sagas")
    op.drop_table("inbox", schema="sagas")
    op.drop_index(op.f("ix_orders_orders_customer_id"), table_name="orders", schema="orders")
    op.drop_table("orders", schema="orders")
    op.drop_table("idempotency_keys", schema="orders")
    for schema in reversed(SCHEMAS):
        op.execute(f"DROP SCHEMA IF EXISTS {schema}")
