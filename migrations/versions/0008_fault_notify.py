"""ops.faults notifies its changes; outboxes notify only rows left to the relay

Workers keep the fault switches in memory and reload them when notified. A consumer
publishes the outbox rows it commits itself (they are inserted already claimed), so
the relay is woken only for rows written unclaimed.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION public.sagaway_faults_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sagaway_faults', '');
    RETURN NULL;
END
$$
"""


OUTBOX_SCHEMAS = ("sagas", "inventory", "payment", "notification")


def upgrade() -> None:
    op.execute(NOTIFY_FUNCTION)
    op.execute(
        "CREATE TRIGGER faults_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON ops.faults FOR EACH STATEMENT EXECUTE FUNCTION public.sagaway_faults_notify()"
    )
    for schema in OUTBOX_SCHEMAS:
        # Per row, but only for rows nobody claimed; NOTIFY folds the repeats of one
        # transaction into one notification.
        op.execute(f"DROP TRIGGER IF EXISTS outbox_notify ON {schema}.outbox")
        op.execute(
            f"CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox "
            "FOR EACH ROW WHEN (NEW.claim_token IS NULL) "
            "EXECUTE FUNCTION public.sagaway_outbox_notify()"
        )


def downgrade() -> None:
    for schema in OUTBOX_SCHEMAS:
        op.execute(f"DROP TRIGGER IF EXISTS outbox_notify ON {schema}.outbox")
        op.execute(
            f"CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox "
            "FOR EACH STATEMENT EXECUTE FUNCTION public.sagaway_outbox_notify()"
        )
    op.execute("DROP TRIGGER IF EXISTS faults_notify ON ops.faults")
    op.execute("DROP FUNCTION IF EXISTS public.sagaway_faults_notify()")
