"""ops.faults notifies its changes, so workers keep the switches in memory

Revision ID: 0008
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
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


def upgrade() -> None:
    op.execute(NOTIFY_FUNCTION)
    op.execute(
        "CREATE TRIGGER faults_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON ops.faults FOR EACH STATEMENT EXECUTE FUNCTION public.sagaway_faults_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS faults_notify ON ops.faults")
    op.execute("DROP FUNCTION IF EXISTS public.sagaway_faults_notify()")
