"""relay: claim leases, per-row backoff, dead rows, NOTIFY on insert, janitor indexes

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTBOX_SCHEMAS = ("sagas", "inventory", "payment", "notification")

# One notification per inserting statement, sent when its transaction commits, so an
# idle relay wakes within a millisecond of a commit instead of at its next poll.
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION public.sagaway_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sagaway_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(NOTIFY_FUNCTION)
    for schema in OUTBOX_SCHEMAS:
        for column in (
            sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("claim_token", sa.Uuid(), nullable=True),
            sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True),
        ):
            op.add_column("outbox", column, schema=schema)
        op.drop_index(f"ix_{schema}_outbox_unpublished", table_name="outbox", schema=schema)
        op.create_index(
            f"ix_{schema}_outbox_pending",
            "outbox",
            ["id"],
            unique=False,
            schema=schema,
            postgresql_where=sa.text("published_at IS NULL AND dead_at IS NULL"),
        )
        op.create_index(f"ix_{schema}_inbox_received", "inbox", ["received_at"], schema=schema)
        op.execute(
            f"CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox "
            "FOR EACH STATEMENT EXECUTE FUNCTION public.sagaway_outbox_notify()"
        )


def downgrade() -> None:
    for schema in OUTBOX_SCHEMAS:
        op.execute(f"DROP TRIGGER IF EXISTS outbox_notify ON {schema}.outbox")
        op.drop_index(f"ix_{schema}_inbox_received", table_name="inbox", schema=schema)
        op.drop_index(f"ix_{schema}_outbox_pending", table_name="outbox", schema=schema)
        op.create_index(
            f"ix_{schema}_outbox_unpublished",
            "outbox",
            ["id"],
            unique=False,
            schema=schema,
            postgresql_where=sa.text("published_at IS NULL"),
        )
        for column in ("dead_at", "next_attempt_at", "claim_token", "claimed_until"):
            op.drop_column("outbox", column, schema=schema)
    op.execute("DROP FUNCTION IF EXISTS public.sagaway_outbox_notify()")
