"""The built-in order application: what every command runs when no ``--app`` is given.

It is built with the same public API a team uses for its own saga (``sagaway.SagaApp``,
``Participant``, the saga DSL); nothing about it is known to sagaway elsewhere.
"""

from __future__ import annotations

from sagaway.orchestrator.application import SagaApp
from sagaway.services.inventory.handlers import inventory
from sagaway.services.inventory.tables import metadata as inventory_tables
from sagaway.services.notification.handlers import notification
from sagaway.services.notification.tables import metadata as notification_tables
from sagaway.services.orders import local_steps, routes_admin, routes_orders
from sagaway.services.orders.saga import ORDER_FULFILLMENT
from sagaway.services.orders.seed import seed_demo
from sagaway.services.orders.tables import metadata as order_tables
from sagaway.services.payment.handlers import payment
from sagaway.services.payment.tables import metadata as payment_tables

order_app = SagaApp(
    "orders",
    sagas=[ORDER_FULFILLMENT],
    participants=[inventory, payment, notification],
    local_steps=local_steps.HANDLERS,
    routers=[routes_orders.router, routes_admin.router],
    seed=seed_demo,
    metadata=[order_tables, inventory_tables, payment_tables, notification_tables],
)
"""Orders: reserve stock, authorize payment, approve (pivot), notify."""
