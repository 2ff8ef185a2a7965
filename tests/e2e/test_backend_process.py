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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from orchestrator.tables import sagas
from outbox.broker_nodes import node_address
from sagaway.database import create_engine, session_factory
from sagaway.migrate import migrate
from sagaway.settings import Settings
from sagaway.supervisor import BACKEND_PORT_OFFSET, GRACE_S
from sagaway.topology import ORCHESTRATOR, PARTICIPANTS, Names, build_topology
from tests.e2e.conftest import LOGS, System
from tests.e2e.invariants import assert_invariants
from tests.support import drop_database, free_port, isolated_settings, new_run_id, wait_for

Body = dict[str, Any]
Admin = dict[str, str]

TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED"}
# Generous for a cold start of a process on two shared cores.
START_S = 30.0


# --- one installation of the test's own ------------------------------------------------


@dataclass
class Installation:
    """A database and a namespace of one test, and the processes it starts on them."""

    settings: Settings
    system: System
    engine: AsyncEngine

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions on the installation's database."""
        return session_factory(self.engine)


@pytest.fixture
async def own() -> AsyncIterator[Installation]:
    """Settings on a fresh database and namespace (not migrated: a test decides who
    migrates); on the way out its processes stop and the database and queues go."""
    # new_run_id() is the session's id when SAGAWAY_TEST_RUN_ID is set: the suffix keeps
    # this installation apart from the session's database even then.
    # A step deadline far beyond any test: a saga ends only if no message of it was
    # lost, never because a deadline re-sent what a stop dropped.
    settings = isolated_settings(f"{new_run_id()}b{uuid.uuid4().hex[:6]}", step_timeout_s=300.0)
    system = System(settings=settings, api_url=f"http://127.0.0.1:{free_port()}")
    engine = create_engine(settings.database_url)
    try:
        yield Installation(settings=settings, system=system, engine=engine)
    finally:
        await asyncio.to_thread(system.stop_all)
        await engine.dispose()
        await _delete_topology(settings)
        await drop_database(settings)


async def _delete_topology(settings: Settings) -> None:
    topology = build_topology(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        for spec in topology.queues:
            await channel.queue_delete(spec.name)
            await channel.queue_delete(topology.dead_letter_queue(spec.name))
        for name in (*topology.exchanges, topology.dead_letter_exchange):
            await channel.exchange_delete(name)
    finally:
        await connection.close()


# --- HTTP helpers ----------------------------------------------------------------------


async def _status(client: httpx.AsyncClient, path: str) -> int:
    try:
        return (await client.get(path)).status_code
    except httpx.TransportError:
        return 0


async def _ready(client: httpx.AsyncClient, what: str) -> None:
    await wait_for(
        lambda: _status(client, "/readyz"), until=lambda s: s == 200, within=START_S, what=what
    )


async def _stock(api: httpx.AsyncClient, admin: Admin, sku: str, units: int) -> None:
    response = await api.put(f"/admin/inventory/{sku}", json={"available": units}, headers=admin)
    assert response.status_code == 200, response.text


async def _credit(api: httpx.AsyncClient, admin: Admin, customer: str, cents: int) -> None:
    response = await api.put(
        f"/admin/customers/{customer}", json={"credit_limit_cents": cents}, headers=admin
    )
    assert response.status_code == 200, response.text


async def _place(api: httpx.AsyncClient, customer: str, sku: str, qty: int, price: int) -> Body:
    response = await api.post(
        "/orders",
        json={
            "customer_id": customer,
            "items": [{"sku": sku, "quantity": qty, "unit_price_cents": price}],
        },
    )
    assert response.status_code == 202, response.text
    placed: Body = response.json()
    return placed


async def _outcome(api: httpx.AsyncClient, saga_id: str) -> Body:
    """The saga once terminal: long polls of 10 s, each answered as soon as it ends."""

    async def poll() -> Body:
        response = await api.get(f"/sagas/{saga_id}", params={"wait_s": 10})
        assert response.status_code == 200, response.text
        body: Body = response.json()
        return body

    return await wait_for(
        poll, until=lambda s: s["status"] in TERMINAL, within=25, what=f"saga {saga_id} terminal"
    )


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
        await _ready(api, "API ready")
        await _ready(side, "backend ready")
        assert (await side.get("/healthz")).json() == {"status": "ok"}
        assert (await side.get("/readyz")).json() == {
            "status": "ready",
            "rabbitmq_node": node_address(own.settings.amqp_nodes[0]),
        }

        sku, scarce = f"BE-{_uid()}", f"BE-SCARCE-{_uid()}"
        rich, poor = f"c-be-{_uid()}", f"c-be-poor-{_uid()}"
        await _stock(api, admin_headers, sku, 10)
        await _stock(api, admin_headers, scarce, 1)
        await _credit(api, admin_headers, rich, 100_000)
        await _credit(api, admin_headers, poor, 999)

        ok = await _place(api, rich, sku, 2, 1500)
        short = await _place(api, rich, scarce, 2, 100)
        broke = await _place(api, poor, sku, 1, 1000)
        completed, out_of_stock, no_funds = await asyncio.gather(
            _outcome(api, ok["saga_id"]),
            _outcome(api, short["saga_id"]),
            _outcome(api, broke["saga_id"]),
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
        await _ready(api, "API ready")
        await _stock(api, admin_headers, sku, 1000)
        await _stock(api, admin_headers, scarce, 1)
        await _credit(api, admin_headers, rich, 10_000_000)
        await _credit(api, admin_headers, poor, 1)

        placed: list[tuple[Body, str]] = []
        gate = asyncio.Semaphore(4)

        async def place(customer: str, sku_: str, qty: int, expect: str) -> None:
            async with gate:
                placed.append((await _place(api, customer, sku_, qty, 100), expect))

        burst = asyncio.gather(*(place(*p) for p in plan))
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
        outcomes = await asyncio.gather(*(_outcome(api, body["saga_id"]) for body, _ in placed))

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


@dataclass(frozen=True)
class Proc:
    """A process of the test's installation, from /proc."""

    pid: int
    ppid: int
    args: tuple[str, ...]


def _marked(namespace: str) -> list[Proc]:
    """``python -m sagaway ...`` processes whose environment names ``namespace``."""
    marker = f"SAGAWAY_NAMESPACE={namespace}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            stat = (entry / "stat").read_text()
        except OSError:  # gone, or not ours to read
            continue
        if marker not in environ or "sagaway" not in cmdline:
            continue
        at = cmdline.index("sagaway")
        if at == 0 or cmdline[at - 1] != "-m":
            continue
        # Fields after the command name (which may hold spaces): state, ppid, ...
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found.append(Proc(int(entry.name), ppid, tuple(cmdline[at + 1 :])))
    return found


async def _children(namespace: str, supervisor: int) -> list[Proc]:
    procs = await asyncio.to_thread(_marked, namespace)
    assert {p.pid for p in procs if p.ppid != supervisor} == {supervisor}, procs
    return sorted((p for p in procs if p.ppid == supervisor), key=lambda p: p.args)


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
        lambda: _children(own.settings.namespace, up.pid),
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
        await _ready(api, "API ready")
        await _ready(side, "backend ready on base + 6")
        sku, customer = f"UP-{_uid()}", f"c-up-{_uid()}"
        await _stock(api, admin_headers, sku, 5)
        await _credit(api, admin_headers, customer, 10_000)
        placed = await _place(api, customer, sku, 1, 700)
        saga = await _outcome(api, placed["saga_id"])
    assert saga["status"] == "COMPLETED", saga

    # Still the same two processes: neither died and was restarted meanwhile.
    assert await _children(own.settings.namespace, up.pid) == first
    await assert_invariants(own.sessions, stock_totals={sku: 5}, customers_used=[customer])

    own.system.processes.pop("up")
    up.send_signal(signal.SIGINT)
    code = await asyncio.to_thread(_wait_exit, up, GRACE_S + 5)
    assert code == 0, f"sagaway up exit code {code} (None: still running)"
    assert not await asyncio.to_thread(_marked, own.settings.namespace)
    # `up` answers 0 whatever its children did, so how each of them ended is read from
    # its log: the backend exits 0; uvicorn, after its graceful shutdown, re-raises the
    # SIGTERM it caught (-15). Neither had to be killed after the grace period.
    log = LOGS / f"{own.settings.namespace}-up.log"
    stopped = {e["component"]: e["exit_code"] for e in _log_events(log, "component stopped")}
    assert stopped.keys() == {"api", "backend"}, stopped
    assert stopped["backend"] == 0, stopped
    assert stopped["api"] in (0, -signal.SIGTERM), stopped
    assert not _log_events(log, "component did not stop in time, killing")
