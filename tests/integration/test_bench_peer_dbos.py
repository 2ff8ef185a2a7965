"""The DBOS peer of `sagaway bench --peer dbos`: the saga's three outcomes, in every mode."""

from __future__ import annotations

import uuid

import httpx
import pytest

pytest.importorskip(
    "dbos", reason="DBOS Transact is not installed (the bench extra: pip install -e '.[bench]')"
)

from sagaway.bench_peer.databases import PeerDatabases, connect
from sagaway.bench_peer.invariants import check_dbos_invariants
from sagaway.bench_peer.server import start_dbos_peer
from sagaway.bench_peer.tuning import PeerTuning, Style
from sagaway.outbox.settings import Settings
from tests.support import free_port


def _order(customer_id: str, sku: str) -> dict[str, object]:
    return {
        "customer_id": customer_id,
        "items": [{"sku": sku, "quantity": 2, "unit_price_cents": 1500}],
        "currency": "USD",
    }


@pytest.mark.parametrize("style", ["async", "sync"])
@pytest.mark.parametrize("mode", ["transactions", "steps"])
def test_the_peer_runs_each_outcome_and_keeps_the_invariants(
    settings: Settings, run_id: str, mode: str, style: Style
) -> None:
    prefix = f"sagaway_peer_{run_id}_{mode[:2]}_{style}"
    with (
        start_dbos_peer(
            database_url=settings.database_url,
            port=free_port(),
            mode=mode,
            prefix=prefix,
            tuning=PeerTuning(style=style),
        ) as peer,
        httpx.Client(base_url=peer.url, timeout=30) as client,
    ):
        admin = {"Authorization": "Bearer anything"}
        for path, body in [
            ("/admin/inventory/SKU-1", {"available": 10}),
            ("/admin/inventory/SKU-EMPTY", {"available": 0}),
            ("/admin/customers/c-rich", {"credit_limit_cents": 100_000}),
            ("/admin/customers/c-broke", {"credit_limit_cents": 0}),
        ]:
            assert client.put(path, json=body, headers=admin).status_code == 200

        expected = {
            ("c-rich", "SKU-1"): ("COMPLETED", None),
            ("c-rich", "SKU-EMPTY"): ("COMPENSATED", "out_of_stock"),
            ("c-broke", "SKU-1"): ("COMPENSATED", "insufficient_funds"),
        }
        for (customer, sku), (status, reason) in expected.items():
            key = {"Idempotency-Key": f"{customer}-{sku}"}
            posted = client.post("/orders", json=_order(customer, sku), headers=key)
            assert posted.status_code == 202, posted.text
            accepted = posted.json()
            assert accepted["status"] == "PENDING"
            assert posted.headers["Location"] == f"/sagas/{accepted['saga_id']}"

            saga = client.get(f"/sagas/{accepted['saga_id']}", params={"wait_s": 20}).json()
            assert (saga["status"], saga["failure_reason"]) == (status, reason)

            # The same key and body answer the first order again and start nothing new.
            again = client.post("/orders", json=_order(customer, sku), headers=key)
            assert again.status_code == 202
            assert again.json() == accepted

        assert client.get(f"/sagas/{uuid.uuid4()}").status_code == 404
        assert check_dbos_invariants(settings.database_url, prefix=prefix) == []

        # The check sees a broken invariant: a unit reserved by no approved order.
        with connect(PeerDatabases.derive(settings.database_url, prefix=prefix).app_url) as db:
            db.execute("UPDATE stock SET reserved = reserved + 1 WHERE sku = 'SKU-1'")
        problems = check_dbos_invariants(settings.database_url, prefix=prefix)
        assert any("SKU-1" in problem for problem in problems), problems
