"""Every service's metadata, in one place for Alembic and the schema test."""

from __future__ import annotations

from sqlalchemy import MetaData

from sagaway.orchestrator.tables import metadata as sagas
from sagaway.services.inventory.tables import metadata as inventory
from sagaway.services.notification.tables import metadata as notification
from sagaway.services.ops.tables import metadata as ops
from sagaway.services.orders.tables import metadata as orders
from sagaway.services.payment.tables import metadata as payment

ALL_METADATA: tuple[MetaData, ...] = (orders, sagas, inventory, payment, notification, ops)
SCHEMAS: tuple[str, ...] = tuple(m.schema for m in ALL_METADATA if m.schema)
