"""tracing: W3C traceparent on every outbox row and on each saga

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTBOX_SCHEMAS = ("sagas", "inventory", "payment", "notification")

# "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>": 55 characters in version 00.
TRACEPARENT = sa.String(length=55)


def upgrade() -> None:
    # Nullable without a default: adding the column rewrites nothing, however many
    # rows the tables hold, and rows written with tracing off simply carry no trace.
    for schema in OUTBOX_SCHEMAS:
        op.add_column("outbox", sa.Column("traceparent", TRACEPARENT, nullable=True), schema=schema)
    op.add_column("sagas", sa.Column("traceparent", TRACEPARENT, nullable=True), schema="sagas")


def downgrade() -> None:
    op.drop_column("sagas", "traceparent", schema="sagas")
    for schema in OUTBOX_SCHEMAS:
        op.drop_column("outbox", "traceparent", schema=schema)
