"""The ops schema: simulated outages and the record of every admin action."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
)

metadata = MetaData(schema="ops")

# One row per participant while an outage is simulated; read by every worker process
# on every command, so an operator's switch is seen everywhere at once.
faults = Table(
    "faults",
    metadata,
    Column("participant", String(32), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

admin_actions = Table(
    "admin_actions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(128), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_admin_actions_target", "target", "id"),
)
