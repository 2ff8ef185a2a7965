"""sagas: the version, fingerprint and shape of the definition a saga started under

Revision ID: 0011
Revises: 0010

Sagas started before this revision were all started under the order saga as it is
now, so they are given its values (frozen here, as ``SagaDefinition`` computes them
for services/orders' ``order_fulfillment`` at version 1). Other saga types cannot be
known from here; theirs stay NULL, which the start-up check reads as "compare by step
names only".
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORDER_SAGA = "order_fulfillment"
ORDER_VERSION = 1
ORDER_FINGERPRINT = "e57c3ac7826a83e1"
ORDER_SHAPE = (
    "reserve_inventory=inventory.ReserveInventory/inventory.ReleaseInventory",
    "authorize_payment=payment.AuthorizePayment/payment.VoidPayment",
    "approve_order=@orders.approve/-!",
    "notify_customer=notification.NotifyCustomer/-",
    "~@orders.reject",
    "~notification.NotifyCustomer",
)


def upgrade() -> None:
    # Nullable with no default: adding them rewrites nothing; the UPDATE below fills
    # the order sagas' rows once.
    op.add_column("sagas", sa.Column("definition_version", sa.Integer()), schema="sagas")
    op.add_column("sagas", sa.Column("definition_fingerprint", sa.String(16)), schema="sagas")
    op.add_column("sagas", sa.Column("definition_shape", JSONB()), schema="sagas")
    op.execute(
        sa.text(
            "UPDATE sagas.sagas SET definition_version = :version,"
            " definition_fingerprint = :fingerprint, definition_shape = CAST(:shape AS jsonb)"
            " WHERE saga_type = :saga_type"
        ).bindparams(
            version=ORDER_VERSION,
            fingerprint=ORDER_FINGERPRINT,
            shape=json.dumps(list(ORDER_SHAPE)),
            saga_type=ORDER_SAGA,
        )
    )


def downgrade() -> None:
    for name in ("definition_shape", "definition_fingerprint", "definition_version"):
        op.drop_column("sagas", name, schema="sagas")
