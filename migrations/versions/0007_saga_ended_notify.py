"""sagas: NOTIFY when a saga becomes terminal, for the API's long polls

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TERMINAL = "('COMPLETED', 'COMPENSATED', 'FAILED')"

# The saga's id on the channel the API's long polls LISTEN on (services/orders/
# saga_watch.py), sent when the ending transaction commits: a waiting GET
# /sagas/{id}?wait_s=N is woken instead of asking the database while it waits. Once per
# terminal transition, not per update, so the sagas that are still running pay only the
# trigger's WHEN test.
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION public.sagaway_saga_ended_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sagaway_saga_ended', NEW.id::text);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(NOTIFY_FUNCTION)
    op.execute(
        "CREATE TRIGGER saga_ended_notify AFTER UPDATE OF status ON sagas.sagas FOR EACH ROW "
        f"WHEN (NEW.status IN {TERMINAL} AND OLD.status IS DISTINCT FROM NEW.status) "
        "EXECUTE FUNCTION public.sagaway_saga_ended_notify()"
    )
    # A saga whose steps all run inside the transaction that starts it is inserted
    # already terminal.
    op.execute(
        "CREATE TRIGGER saga_started_ended_notify AFTER INSERT ON sagas.sagas FOR EACH ROW "
        f"WHEN (NEW.status IN {TERMINAL}) "
        "EXECUTE FUNCTION public.sagaway_saga_ended_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS saga_started_ended_notify ON sagas.sagas")
    op.execute("DROP TRIGGER IF EXISTS saga_ended_notify ON sagas.sagas")
    op.execute("DROP FUNCTION IF EXISTS public.sagaway_saga_ended_notify()")
