"""``sagaway backend`` (relay, orchestrator and the three workers on one event loop) and
``sagaway up``'s default two-process layout, against the real PostgreSQL and RabbitMQ.

Each test runs an installation of its own: its own database and broker namespace, so
that whatever consumes its queues is the process the test started and nothing else (the
package's shared ``system`` is not used). The database is dropped and the namespace's
queues and exchanges deleted when the test ends.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.migrate import migrate
from sagaway.orchestrator.application import Names
from sagaway.orchestrator.participants import ORCHESTRATOR
from sagaway.orchestrator.tables import sagas
from sagaway.outbox.broker_nodes import node_address
from sagaway.supervisor import BACKEND_PORT_OFFSET, GRACE_S
from tests.e2e.conftest import LOGS
from tests.e2e.installation import (
    START_S,
    TERMINAL,
    Admin,
    Body,
    Installation,
    Proc,
    children,
    credit,
    installation,
    marked,
    outcome,
    place,
    stock,
    until_ready,
)
from tests.e2e.invariants import assert_invariants
from tests.support import PARTICIPANTS, free_port, isolated_settings, new_run_id, wait_for


@pytest.fixture
async def own() -> AsyncIterator[Installation]:
    """A fresh database and namespace of the test's own (see ``installation``)."""
    # new_run_id() is the session's id when SAGAWAY_TEST_RUN_ID is set: the suffix keeps
    # this installation apart from the session's database even then.
    # A step deadline far beyond any test: a saga ends only if no message of it was
    # lost, never because a deadline re-sent what a stop dropped.
    settings = isolated_settings(f"{new_run_id()}b{uuid.uuid4().hex[:6]}", step_timeout_s=300.0)
    async with installation(settings) as inst:
        yield inst


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _uid() -> str:
    return uuid.uuid4().hex[:8]


# --- 1. api + backend --------------------------------------------------------------------


@pytest.mark.timeout(45)
async def test_api_and_one_backend_process_run_every_outcome_and_serve_its_probes(
    own: Installation, admin_headers: Admin
) -> None:
    await migrate(own.settings)
    side_port = free_port()
    own.system.start("api", "api", "--port", own.system.api_url.rsplit(":", 1)[1])
    own.system.start("backend", "backend", env={"SAGAWAY_METRICS_PORT": str(side_port)})

    async with (
        httpx.AsyncClient(base_url=own.system.api_url, timeout=15) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{side_port}", timeout=10) as side,
    ):
        await until_ready(api, "API ready")
        await until_ready(side, "backend ready")
        assert (await side.get("/healthz")).json() == {"status": "ok"}
        assert (await side.get("/readyz")).json() == {
            "status": "ready",
            "rabbitmq_node": node_address(own.settings.amqp_nodes[0]),
        }

        sku, scarce = f"BE-{_uid()}", f"BE-SCARCE-{_uid()}"
        rich, poor = f"c-be-{_uid()}", f"c-be-poor-{_uid()}"
        await stock(api, admin_headers, sku, 10)
        await stock(api, admin_headers, scarce, 1)
        await credit(api, admin_headers, rich, 100_000)
        await credit(api, admin_headers, poor, 999)

        ok = await place(api, rich, sku, 2, 1500)
        short = await place(api, rich, scarce, 2, 100)
        broke = await place(api, poor, sku, 1, 1000)
        completed, out_of_stock, no_funds = await asyncio.gather(
            outcome(api, ok["saga_id"]),
            outcome(api, short["saga_id"]),
            outcome(api, broke["saga_id"]),
        )

        assert completed["status"] == "COMPLETED", completed
        assert all(s["status"] == "SUCCEEDED" for s in completed["steps"]), completed
        assert out_of_stock["status"] == "COMPENSATED", out_of_stock
        assert "out_of_stock" in out_of_stock["failure_reason"]
        assert no_funds["status"] == "COMPENSATED", no_funds
        assert "insufficient_funds" in no_funds["failure_reason"]
        for placed, reason in ((short, "out_of_stock"), (broke, "insufficient_funds")):
            order = (await api.get(f"/orders/{placed['order_id']}")).json()
            assert (order["status"], order["rejection_reason"]) == ("REJECTED", reason)

        # Nothing else consumes this namespace's queues: every queue was drained by the
        # one backend process, and its one registry counts all of them.
        text = (await side.get("/metrics")).text
    consumed = _samples(text, "sagaway_messages_consumed_total")
    names = Names(own.settings.namespace)
    for consumer in (ORCHESTRATOR, *PARTICIPANTS):
        applied = consumed.get((("queue", names.queue(consumer)), ("result", "applied")), 0.0)
        assert applied > 0, (consumer, consumed)
    round_trips = _samples(text, "sagaway_db_round_trips_total")
    assert round_trips.get((), 0.0) > 0, round_trips

    await assert_invariants(
        own.sessions, stock_totals={sku: 10, scarce: 1}, customers_used=[rich, poor]
    )


# --- 2. SIGTERM with sagas in flight ---------------------------------------------------


async def _statuses(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(select(sagas.c.status, func.count()).group_by(sagas.c.status))
        return {status: count for status, count in rows.all()}


async def _midway(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Sagas that are active and past their first step: work the backend held."""
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(sagas)
            .where(sagas.c.status.in_(["RUNNING", "COMPENSATING"]))
            .where((sagas.c.cursor > 0) | (sagas.c.status == "COMPENSATING"))
        )
        return int(count or 0)


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@pytest.mark.timeout(60)
async def test_sigterm_to_the_backend_mid_burst_loses_nothing_and_applies_nothing_twice(
    own: Installation, admin_headers: Admin
) -> None:
    await migrate(own.settings)
    own.system.start("api", "api", "--port", own.system.api_url.rsplit(":", 1)[1])
    own.system.start("backend", "backend")

    sku, scarce = f"BT-{_uid()}", f"BT-SCARCE-{_uid()}"
    rich, poor = f"c-bt-{_uid()}", f"c-bt-poor-{_uid()}"
    # Outcomes that do not depend on the order sagas run in: plenty of stock and credit,
    # or a SKU that never has enough, or a customer that can never pay.
    kinds = [(rich, sku, 1, "COMPLETED")] * 4 + [
        (rich, scarce, 2, "COMPENSATED"),
        (poor, sku, 1, "COMPENSATED"),
    ]
    plan = kinds * 8

    async with httpx.AsyncClient(base_url=own.system.api_url, timeout=15) as api:
        await until_ready(api, "API ready")
        await stock(api, admin_headers, sku, 1000)
        await stock(api, admin_headers, scarce, 1)
        await credit(api, admin_headers, rich, 10_000_000)
        await credit(api, admin_headers, poor, 1)

        placed: list[tuple[Body, str]] = []
        gate = asyncio.Semaphore(4)

        async def place_one(customer: str, sku_: str, qty: int, expect: str) -> None:
            async with gate:
                placed.append((await place(api, customer, sku_, qty, 100), expect))

        burst = asyncio.gather(*(place_one(*p) for p in plan))
        try:
            # The backend is under way: some sagas have ended, the burst goes on.
            await wait_for(
                lambda: _statuses(own.sessions),
                until=lambda s: s.get("COMPLETED", 0) >= 6,
                within=START_S,
                what="first sagas completed by the backend",
            )
            backend = own.system.processes.pop("backend")
            backend.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(_wait_exit, backend, GRACE_S)
            held = await _midway(own.sessions)
            at_stop = await _statuses(own.sessions)
        finally:
            await burst
        assert code == 0, f"backend exit code {code} (None: still running after {GRACE_S}s)"
        # Sagas were left mid-way by the stop: the restart has something to prove.
        assert held > 0, at_stop
        assert sum(v for k, v in at_stop.items() if k not in TERMINAL) > 0, at_stop

        own.system.start("backend-2", "backend")
        outcomes = await asyncio.gather(*(outcome(api, body["saga_id"]) for body, _ in placed))

    assert len(placed) == len(plan)
    wrong = [
        (saga["id"], saga["status"], expect)
        for saga, (_, expect) in zip(outcomes, placed, strict=True)
        if saga["status"] != expect
    ]
    assert not wrong, wrong
    resent = [(s["id"], s["steps"]) for s in outcomes if any(t["attempts"] > 1 for t in s["steps"])]
    assert not resent, resent
    await assert_invariants(
        own.sessions, stock_totals={sku: 1000, scarce: 1}, customers_used=[rich, poor]
    )


# --- 3. sagaway up, default layout ------------------------------------------------------


def _log_events(path: Path, event: str) -> list[Body]:
    lines: Iterable[str] = path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in parsed if e.get("event") == event]


@pytest.mark.timeout(60)
async def test_sagaway_up_runs_two_processes_completes_a_saga_and_stops_cleanly_on_sigint(
    own: Installation, admin_headers: Admin
) -> None:
    api_port = int(own.system.api_url.rsplit(":", 1)[1])
    side_port = free_port()
    base = side_port - BACKEND_PORT_OFFSET
    # No migration here: `sagaway up` migrates the empty database itself.
    own.system.start("up", "up", "--api-port", str(api_port), "--metrics-port-base", str(base))
    up = own.system.processes["up"]

    def two_children(found: list[Proc]) -> bool:
        return len(found) >= 2 or up.poll() is not None

    first = await wait_for(
        lambda: children(own.settings.namespace, up.pid),
        until=two_children,
        within=START_S,
        what="two children of sagaway up",
    )
    assert up.poll() is None, f"sagaway up exited with {up.returncode}"
    assert [p.args for p in first] == [
        ("api", "--port", str(api_port), "--host", "127.0.0.1"),
        ("backend",),
    ]

    async with (
        httpx.AsyncClient(base_url=own.system.api_url, timeout=15) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{side_port}", timeout=10) as side,
    ):
        await until_ready(api, "API ready")
        await until_ready(side, "backend ready on base + 6")
        sku, customer = f"UP-{_uid()}", f"c-up-{_uid()}"
        await stock(api, admin_headers, sku, 5)
        await credit(api, admin_headers, customer, 10_000)
        placed = await place(api, customer, sku, 1, 700)
        saga = await outcome(api, placed["saga_id"])
    assert saga["status"] == "COMPLETED", saga

    # Still the same two processes: neither died and was restarted meanwhile.
    assert await children(own.settings.namespace, up.pid) == first
    await assert_invariants(own.sessions, stock_totals={sku: 5}, customers_used=[customer])

    own.system.processes.pop("up")
    up.send_signal(signal.SIGINT)
    code = await asyncio.to_thread(_wait_exit, up, GRACE_S + 5)
    assert code == 0, f"sagaway up exit code {code} (None: still running)"
    assert not await asyncio.to_thread(marked, own.settings.namespace)
    # `up` answers 0 whatever its children did, so how each of them ended is read from
    # its log: the backend exits 0; uvicorn, after its graceful shutdown, re-raises the
    # SIGTERM it caught (-15). Neither had to be killed after the grace period.
    log = LOGS / f"{own.settings.namespace}-up.log"
    stopped = {e["component"]: e["exit_code"] for e in _log_events(log, "component stopped")}
    assert stopped.keys() == {"api", "backend"}, stopped
    assert stopped["backend"] == 0, stopped
    assert stopped["api"] in (0, -signal.SIGTERM), stopped
    assert not _log_events(log, "component did not stop in time, killing")
