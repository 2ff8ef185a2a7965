"""``check_dbos_invariants``: sagaway's saga invariants, checked on the DBOS peer's data.

To be called once every saga of the run has ended, while the peer's databases still
exist (inside :func:`~sagaway.bench_peer.server.start_dbos_peer`'s ``with`` block).
"""

from __future__ import annotations

from collections import Counter

from sagaway.bench_peer.databases import DEFAULT_PREFIX, PeerDatabases, connect
from sagaway.bench_peer.rules import APPROVED_TEMPLATE, REJECTED_TEMPLATE

SHOWN_PER_KIND = 5
WORKFLOW_NAME = "order_fulfillment"

_STOCK = """
WITH approved AS (
    SELECT line->>'sku' AS sku, sum((line->>'quantity')::bigint) AS quantity
    FROM orders, jsonb_array_elements(orders.items) AS line
    WHERE orders.status = 'APPROVED'
    GROUP BY 1
)
SELECT coalesce(s.sku, a.sku), s.available, s.reserved, s.stocked, coalesce(a.quantity, 0)
FROM stock s FULL JOIN approved a ON a.sku = s.sku
ORDER BY 1
"""
_CREDIT = """
SELECT coalesce(c.customer_id, o.customer_id), c.authorized_cents, coalesce(o.total, 0)
FROM customers c FULL JOIN (
    SELECT customer_id, sum(total_cents) AS total FROM orders
    WHERE status = 'APPROVED' GROUP BY customer_id
) o ON o.customer_id = c.customer_id
ORDER BY 1
"""
_NOTIFICATIONS = """
SELECT o.id::text, o.status, array_remove(array_agg(n.template ORDER BY n.template), NULL)
FROM orders o LEFT JOIN notifications n ON n.order_id = o.id
GROUP BY o.id, o.status
"""
_EXPECTED_TEMPLATE = {"APPROVED": APPROVED_TEMPLATE, "REJECTED": REJECTED_TEMPLATE}


def check_dbos_invariants(database_url: str, *, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The invariants of sagaway's order saga that do not hold on the peer's data.

    Checked: per SKU, ``reserved`` equals the quantity in APPROVED orders and
    ``available + reserved`` equals what the admin PUT stocked; per customer,
    ``authorized_cents`` equals the sum of APPROVED totals; every order is APPROVED or
    REJECTED and has exactly one ``order_fulfillment`` workflow, which succeeded, and no
    workflow lacks an order; every order has exactly one notification, of its outcome.

    Args:
        database_url: The URL given to ``start_dbos_peer``.
        prefix: The prefix given to ``start_dbos_peer``.

    Returns:
        One line per problem found (a few per kind, then a count); empty when all hold.
    """
    databases = PeerDatabases.derive(database_url, prefix=prefix)
    problems: dict[str, list[str]] = {}

    def report(kind: str, detail: str) -> None:
        problems.setdefault(kind, []).append(detail)

    with connect(databases.app_url) as app:
        for sku, available, reserved, stocked, approved in app.execute(_STOCK):
            if reserved is None:
                report("stock", f"SKU {sku}: {approved} units in APPROVED orders, never stocked")
                continue
            if reserved != approved:
                report("stock", f"SKU {sku}: reserved {reserved} != {approved} in APPROVED orders")
            if available + reserved != stocked:
                report(
                    "stock",
                    f"SKU {sku}: available {available} + reserved {reserved} != stocked {stocked}",
                )
        for customer, authorized, approved in app.execute(_CREDIT):
            if (authorized or 0) != approved:
                report(
                    "credit",
                    f"customer {customer}: authorized {authorized} != {approved} APPROVED",
                )
        order_status: dict[str, str] = {}
        for order_id, status, templates in app.execute(_NOTIFICATIONS):
            order_status[order_id] = status
            if status not in _EXPECTED_TEMPLATE:
                report("orders", f"order {order_id} is {status}, not APPROVED or REJECTED")
            elif templates != [_EXPECTED_TEMPLATE[status]]:
                report("notifications", f"order {order_id} ({status}) notified {templates}")

    with connect(databases.system_url) as system:
        workflows = system.execute(
            "SELECT workflow_uuid, name, status FROM dbos.workflow_status"
        ).fetchall()
    per_order = Counter(str(workflow_id) for workflow_id, _, _ in workflows)
    for workflow_id, name, status in workflows:
        if str(workflow_id) not in order_status:
            report("workflows", f"workflow {workflow_id} ({name}) has no order")
        elif name != WORKFLOW_NAME or status != "SUCCESS":
            report("workflows", f"workflow {workflow_id} is {name} {status}")
    for order_id in order_status:
        if per_order[order_id] != 1:
            report("workflows", f"order {order_id} has {per_order[order_id]} workflows")

    lines: list[str] = []
    for kind, details in problems.items():
        lines.extend(details[:SHOWN_PER_KIND])
        if len(details) > SHOWN_PER_KIND:
            lines.append(f"... and {len(details) - SHOWN_PER_KIND} more {kind} problems")
    return lines
