"""trips, flights, hotels and payments tables

Revision ID: trips_0001
Revises:
Create Date: 2026-11-30 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "trips_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMAS = ("trips", "flights", "hotels", "payments")


def _timestamps() -> list[sa.Column[sa.DateTime]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def upgrade() -> None:
    # sagaway creates each participant's schema for its outbox and inbox before these
    # run; "IF NOT EXISTS" keeps the revision correct in either order.
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    op.create_table(
        "bookings",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("saga_id", sa.Uuid(), nullable=False, unique=True),
        sa.Column("traveler", sa.String(200), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("depart_on", sa.Date(), nullable=False),
        sa.Column("nights", sa.Integer(), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flight_ref", sa.String(32)),
        sa.Column("hotel_ref", sa.String(32)),
        sa.Column("charge_ref", sa.String(32)),
        sa.Column("rejection_reason", sa.String(200)),
        *_timestamps(),
        schema="trips",
    )
    op.create_table(
        "reservations",
        sa.Column("saga_id", sa.Uuid(), primary_key=True),
        sa.Column("booking_id", sa.Uuid(), nullable=False),
        sa.Column("flight_ref", sa.String(32)),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps(),
        schema="flights",
    )
    op.create_table(
        "reservations",
        sa.Column("saga_id", sa.Uuid(), primary_key=True),
        sa.Column("booking_id", sa.Uuid(), nullable=False),
        sa.Column("hotel_ref", sa.String(32)),
        sa.Column("nights", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps(),
        schema="hotels",
    )
    op.create_table(
        "charges",
        sa.Column("saga_id", sa.Uuid(), primary_key=True),
        sa.Column("booking_id", sa.Uuid(), nullable=False),
        sa.Column("charge_ref", sa.String(32)),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps(),
        schema="payments",
    )


def downgrade() -> None:
    op.drop_table("charges", schema="payments")
    op.drop_table("reservations", schema="hotels")
    op.drop_table("reservations", schema="flights")
    op.drop_table("bookings", schema="trips")
