"""dashboard indexes: saga lists filtered by type and customer, recent endings

Revision ID: 0003
Revises: 0002

On a large ``sagas`` table each index can be built beforehand without blocking writes,
``CREATE INDEX CONCURRENTLY`` with the same name and definition; this migration then
finds it and builds nothing (it runs inside one transaction, under the migration lock,
where ``CONCURRENTLY`` is not allowed).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sagas_type_created",
        "sagas",
        ["saga_type", "created_at", "id"],
        unique=False,
        schema="sagas",
        if_not_exists=True,
    )
    op.create_index(
        "ix_sagas_customer_created",
        "sagas",
        [sa.text("(data ->> 'customer_id')"), "created_at", "id"],
        unique=False,
        schema="sagas",
        if_not_exists=True,
    )
    op.create_index(
        "ix_sagas_finished_updated",
        "sagas",
        ["updated_at", "status"],
        unique=False,
        schema="sagas",
        postgresql_where=sa.text("status IN ('COMPLETED', 'COMPENSATED', 'FAILED')"),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_sagas_finished_updated", table_name="sagas", schema="sagas")
    op.drop_index("ix_sagas_customer_created", table_name="sagas", schema="sagas")
    op.drop_index("ix_sagas_type_created", table_name="sagas", schema="sagas")
