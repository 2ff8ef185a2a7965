"""inbox digest: tell a message id reused with other content from a redelivery

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INBOX_SCHEMAS = ("sagas", "inventory", "payment", "notification")


def upgrade() -> None:
    # Nullable with no default: adding it rewrites nothing, and rows recorded before it
    # simply cannot be compared (their duplicates are dropped as before).
    for schema in INBOX_SCHEMAS:
        op.add_column("inbox", sa.Column("digest", sa.LargeBinary(), nullable=True), schema=schema)


def downgrade() -> None:
    for schema in INBOX_SCHEMAS:
        op.drop_column("inbox", "digest", schema=schema)
