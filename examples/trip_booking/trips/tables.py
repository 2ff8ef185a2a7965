"""The trips schema: one booking per trip, moved along by the saga's local steps."""

from __future__ import annotations

from sqlalchemy import Column, Date, DateTime, Integer, MetaData, String, Table, Uuid, func

metadata = MetaData(schema="trips")

bookings = Table(
    "bookings",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("saga_id", Uuid, nullable=False, unique=True),
    Column("traveler", String(200), nullable=False),
    Column("destination", String(100), nullable=False),
    Column("depart_on", Date, nullable=False),
    Column("nights", Integer, nullable=False),
    Column("seats", Integer, nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("flight_ref", String(32)),
    Column("hotel_ref", String(32)),
    Column("charge_ref", String(32)),
    Column("rejection_reason", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
