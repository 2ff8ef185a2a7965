"""PostgreSQL crashing, or refusing connections, under a running ``sagaway up``.

Each test runs ``sagaway up`` (the API and the backend, supervised) on a PostgreSQL
server of the run's own (``private_postgres``: the machine's shared one is never
touched) and RabbitMQ's main broker in a namespace of its own. Clients place a few
hundred orders, retrying a 503 with the same ``Idempotency-Key`` as a client should;
mid-run the server crashes (an immediate-mode restart, or its postmaster killed with
SIGKILL: crash recovery from the WAL either way) or stops for a window in which
connections are refused. Afterwards:

- every order was accepted exactly once, and nothing in the database is half-written
  (no order without its saga, first command and key; no saga, command or key without
  its order);
- every saga ended with the outcome its order implies, each step sent once (no message
  was lost: the step deadline is far beyond the test, so a lost message would hang a
  saga rather than be re-sent), and the spec's invariants hold (no effect applied twice);
- the components held their messages while the database was away: nothing was
  dead-lettered, no delivery was handed back as failed, no outbox row was parked;
- the components are the processes ``sagaway up`` started (they recovered in process,
  none was restarted), and their LISTEN connections are back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.tables import sagas
from sagaway.outbox.amqp import message_count
from sagaway.services.orders.tables import idempotency_keys, orders
from sagaway.supervisor import BACKEND_PORT_OFFSET
from sagaway.wiring import build_topology
from tests.e2e.conftest import LOGS
from tests.e2e.installation import (
    START_S,
    TERMINAL,
    Admin,
    Body,
    Installation,
    Proc,
    children,
    installation,
    outcome,
    place,
    stock,
    until_ready,
)
from tests.e2e.invariants import assert_invariants
from tests.private_postgres import PrivatePostgres
from tests.support import OUTBOX_TABLES, free_port, isolated_settings, new_run_id, wait_for

Sessions = async_sessionmaker[AsyncSession]

ORDERS = 300
# The first half of the orders is placed before the fault, the rest from the moment it
# begins: the fault always meets clients, and sagas at every step.
BEFORE = ORDERS // 2
CLIENTS = 8
# Orders per second the clients start at most: about what the system finishes.
RATE = 100.0
PLENTY = 1_000_000
# Over the default credit limit (100 000 cents) of a customer payment has never seen.
TOO_DEAR = 200_000
CLIENT_RETRY_S = 0.1
# The consumer doubles its pause between holds from 0.1 s; a hold logged with this
# pause is its sixth, more deliveries than the delivery limit (5) allows.
SIXTH_HOLD_S = 3.2
# LISTEN connections of an installation, per channel: the API's for long polls, the
# relay's for new outbox rows, each worker's for fault switches.
LISTENERS = {"sagaway_saga_ended": 1, "sagaway_outbox": 1, "sagaway_faults": 3}


# --- the installation on the private server -----------------------------------------------


@pytest.fixture
async def site(private_postgres: PrivatePostgres) -> AsyncIterator[Installation]:
    """A fresh database on the private server and a namespace on the main broker."""
    await asyncio.to_thread(private_postgres.ensure_running)
    run = f"{new_run_id()}p{uuid.uuid4().hex[:6]}"
    settings = isolated_settings(
        run,
        database_url=private_postgres.url(f"sagaway_test_{run}"),
        # Far beyond the test: a saga ends only if none of its messages was lost, never
        # because a deadline re-sent what the crash dropped.
        step_timeout_s=300.0,
    )
    async with installation(settings) as inst:
        try:
            yield inst
        finally:
            # Whatever happened, the server is up for the clean-up and the next test.
            await asyncio.to_thread(private_postgres.ensure_running)


@dataclass
class Running:
    """``sagaway up`` on the site, with clients on its API and the backend's side port."""

    site: Installation
    api: httpx.AsyncClient
    side: httpx.AsyncClient
    supervisor: int
    components: list[Proc]

    def log_events(self, event: str) -> list[Body]:
        """Lines the supervisor and its components logged with this ``event``."""
        path = LOGS / f"{self.site.settings.namespace}-up.log"
        found = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line still being written
                if entry.get("event") == event:
                    found.append(entry)
        return found


@pytest.fixture
async def running(site: Installation) -> AsyncIterator[Running]:
    """``sagaway up`` on the site, ready."""
    base = free_port() - BACKEND_PORT_OFFSET
    site.system.start(
        "up", "up", "--api-port", str(site.api_port), "--metrics-port-base", str(base)
    )
    up = site.system.processes["up"]
    found = await wait_for(
        lambda: children(site.settings.namespace, up.pid),
        until=lambda procs: len(procs) >= 2 or up.poll() is not None,
        within=START_S,
        what="the API and the backend under sagaway up",
    )
    assert up.poll() is None, f"sagaway up exited with {up.returncode}"
    async with (
        httpx.AsyncClient(base_url=site.system.api_url, timeout=30) as api,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{base + BACKEND_PORT_OFFSET}", timeout=10
        ) as side,
    ):
        await until_ready(api, "API ready")
        await until_ready(side, "backend ready")
        yield Running(site=site, api=api, side=side, supervisor=up.pid, components=found)


# --- the load -----------------------------------------------------------------------------


@dataclass
class Order:
    """One planned order, and what the API answered each time it was sent."""

    key: str
    customer: str
    sku: str
    quantity: int
    price: int
    expect: str
    reason: str | None
    codes: list[int] = field(default_factory=list)
    accepted: Body | None = None


def _plan(tag: str, plenty: str, scarce: str) -> list[Order]:
    """Orders whose outcome does not depend on the order they run in: each customer is
    new, plenty has more stock than all of them take, scarce never has enough."""
    kinds = [(plenty, 1, 100, "COMPLETED", None)] * 4 + [
        (scarce, 2, 100, "COMPENSATED", "out_of_stock"),
        (plenty, 1, TOO_DEAR, "COMPENSATED", "insufficient_funds"),
    ]
    return [Order(f"{tag}-{n}", f"c-{tag}-{n}", *kinds[n % len(kinds)]) for n in range(ORDERS)]


class Load:
    """Clients placing the planned orders; a 503 is sent again with the same
    ``Idempotency-Key`` after a short pause, as the API asks of its clients.

    The first ``BEFORE`` orders go at once, the others once ``fault_began`` is set.
    """

    def __init__(self, api: httpx.AsyncClient, plan: list[Order]) -> None:
        self._api = api
        self.plan = plan
        self.fault_began = asyncio.Event()
        self.refusals: list[httpx.Response] = []
        self.others: list[str] = []  # anything but 202 or 503

    @property
    def accepted(self) -> int:
        return sum(1 for o in self.plan if o.accepted is not None)

    async def run(self) -> None:
        await self._run(self.plan[:BEFORE])
        await self.fault_began.wait()
        await self._run(self.plan[BEFORE:])

    async def _run(self, orders: list[Order]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        todo: asyncio.Queue[tuple[int, Order]] = asyncio.Queue()
        for n, order in enumerate(orders):
            todo.put_nowait((n, order))

        async def client() -> None:
            while not todo.empty():
                n, order = todo.get_nowait()
                await asyncio.sleep(start + n / RATE - loop.time())
                await self._place(order)

        await asyncio.gather(*(client() for _ in range(CLIENTS)))

    async def _place(self, order: Order) -> None:
        body = {
            "customer_id": order.customer,
            "items": [
                {"sku": order.sku, "quantity": order.quantity, "unit_price_cents": order.price}
            ],
        }
        while True:
            try:
                response = await self._api.post(
                    "/orders", json=body, headers={"Idempotency-Key": order.key}
                )
            except httpx.TransportError as exc:
                order.codes.append(0)
                self.others.append(f"{order.key}: {type(exc).__name__}")
            else:
                order.codes.append(response.status_code)
                if response.status_code == 202:
                    order.accepted = response.json()
                    return
                if response.status_code == 503:
                    self.refusals.append(response)
                else:
                    self.others.append(f"{order.key}: {response.status_code} {response.text}")
            if len(order.codes) > 600:  # a minute of refusals: give up, the test fails
                return
            await asyncio.sleep(CLIENT_RETRY_S)


# --- what the database holds --------------------------------------------------------------


async def _statuses(sessions: Sessions) -> Counter[str]:
    async with sessions() as session:
        rows = await session.execute(select(sagas.c.status, func.count()).group_by(sagas.c.status))
        return Counter({status: count for status, count in rows.all()})


async def _half_written(sessions: Sessions) -> dict[str, int]:
    """Pieces of a placed order found without the rest of it (all zero when none)."""
    first_command = OUTBOX_TABLES["orchestrator"]
    checks = {
        "orders without their saga": f"""
            SELECT count(*) FROM {orders.fullname} o
             WHERE NOT EXISTS (SELECT 1 FROM {sagas.fullname} s
                                WHERE s.id = o.saga_id AND s.order_id = o.id)""",
        "sagas without their order": f"""
            SELECT count(*) FROM {sagas.fullname} s
             WHERE NOT EXISTS (SELECT 1 FROM {orders.fullname} o WHERE o.id = s.order_id)""",
        "sagas without their first command": f"""
            SELECT count(*) FROM {sagas.fullname} s
             WHERE NOT EXISTS (SELECT 1 FROM {first_command.fullname} c
                                WHERE c.saga_id = s.id AND c.message_type = 'ReserveInventory')""",
        "commands of no saga": f"""
            SELECT count(*) FROM {first_command.fullname} c
             WHERE NOT EXISTS (SELECT 1 FROM {sagas.fullname} s WHERE s.id = c.saga_id)""",
        "orders without their idempotency key": f"""
            SELECT count(*) FROM {orders.fullname} o
             WHERE NOT EXISTS (SELECT 1 FROM {idempotency_keys.fullname} k
                                WHERE k.order_id = o.id AND k.saga_id = o.saga_id)""",
        "idempotency keys without their order": f"""
            SELECT count(*) FROM {idempotency_keys.fullname} k
             WHERE NOT EXISTS (SELECT 1 FROM {orders.fullname} o WHERE o.id = k.order_id)""",
    }
    async with sessions() as session:
        return {
            name: int((await session.execute(text(sql))).scalar_one())
            for name, sql in checks.items()
        }


async def _resent_steps(sessions: Sessions) -> list[str]:
    """Sagas in which a step or a compensation was sent more than once."""
    async with sessions() as session:
        rows = (await session.execute(select(sagas.c.id, sagas.c.steps))).all()
    return [
        f"{row.id}: {step['name']} {step['attempts']}/{step['compensation_attempts']}"
        for row in rows
        for step in row.steps
        if step["attempts"] > 1 or step["compensation_attempts"] > 1
    ]


async def _parked_rows(sessions: Sessions) -> int:
    """Outbox rows the relay gave up on."""
    async with sessions() as session:
        total = 0
        for table in OUTBOX_TABLES.values():
            total += (
                await session.scalar(
                    select(func.count()).select_from(table).where(table.c.dead_at.is_not(None))
                )
            ) or 0
        return total


async def _dead_letters(run: Running) -> dict[str, int]:
    """Messages in each dead-letter queue of the namespace."""
    topology = build_topology(run.site.settings)
    connection = await aio_pika.connect(run.site.settings.amqp_url)
    try:
        channel = await connection.channel()
        return {
            spec.name: await message_count(channel, topology.dead_letter_queue(spec.name))
            for spec in topology.queues
        }
    finally:
        await connection.close()


async def _consumed(run: Running) -> Counter[str]:
    """What the backend's consumers did with their deliveries, by result."""
    response = await run.side.get("/metrics")
    results: Counter[str] = Counter()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "sagaway_messages_consumed_total":
                results[sample.labels["result"]] += int(sample.value)
    return results


# --- the scenario -------------------------------------------------------------------------


Fault = Callable[[Running, Load], Awaitable[None]]


@dataclass
class Report:
    """What a scenario saw, for the checks particular to its fault."""

    load: Load
    recoveries: int


async def _through(run: Running, admin: Admin, server: PrivatePostgres, fault: Fault) -> Report:
    """Place the orders, bring ``fault`` on mid-run, and check what every fault must
    leave behind (each test checks what is particular to its own)."""
    sessions = run.site.sessions
    tag = uuid.uuid4().hex[:8]
    plenty, scarce = f"PG-{tag}", f"PG-SCARCE-{tag}"
    await stock(run.api, admin, plenty, PLENTY)
    await stock(run.api, admin, scarce, 1)
    load = Load(run.api, _plan(tag, plenty, scarce))
    recovered_before = server.recoveries()

    placing = asyncio.create_task(load.run())
    try:
        # Mid-run: some sagas ended, others are on their way, and more clients come.
        await wait_for(
            lambda: _statuses(sessions),
            until=lambda s: load.accepted >= BEFORE and s["COMPLETED"] >= 10 and s["RUNNING"] > 0,
            within=60,
            what="the first orders accepted, sagas completing and running",
        )
        waiting = [o.accepted["saga_id"] for o in load.plan if o.accepted][-5:]
        long_polls = [
            asyncio.create_task(run.api.get(f"/sagas/{saga_id}", params={"wait_s": 10}))
            for saga_id in waiting
        ]
        load.fault_began.set()
        await fault(run, load)
    finally:
        load.fault_began.set()
        await placing
    # The pool's connections died with the server; the test's later reads open new ones.
    await run.site.engine.dispose()
    _answered(load, await asyncio.gather(*long_polls))
    await _came_through(run, load, stock_totals={plenty: PLENTY, scarce: 1})
    await _recovered_in_process(run)
    return Report(load=load, recoveries=server.recoveries() - recovered_before)


def _answered(load: Load, long_polls: list[httpx.Response]) -> None:
    """Every order was accepted in the end; every refusal and long poll said why."""
    assert not load.others, load.others[:10]
    assert load.accepted == ORDERS, [o.codes for o in load.plan if o.accepted is None][:5]
    for refusal in load.refusals:
        assert refusal.json() == {"detail": "database unavailable"}, refusal.text
    for response in long_polls:
        # Answered (a long poll never hangs on a lost connection): the saga, or a 503.
        assert response.status_code in (200, 503), response.text
        assert response.status_code == 200 or "detail" in response.json()


async def _came_through(run: Running, load: Load, *, stock_totals: dict[str, int]) -> None:
    """Every saga ended as its order implies, once, and nothing was lost or left over."""
    sessions = run.site.sessions
    await wait_for(
        lambda: _statuses(sessions),
        until=lambda s: sum(s.values()) == ORDERS and not set(s) - TERMINAL,
        within=90,
        interval=0.2,
        what="every saga ended",
    )
    async with sessions() as session:
        found = {
            row.customer_id: row
            for row in await session.execute(
                select(orders.c.id, orders.c.customer_id, orders.c.saga_id)
            )
        }
        ended = {
            row.id: row
            for row in await session.execute(
                select(sagas.c.id, sagas.c.status, sagas.c.failure_reason)
            )
        }
    # One order per client request (the retries of a 503 included), the one answered.
    assert len(found) == ORDERS
    wrong = []
    for order in load.plan:
        assert order.accepted is not None
        row = found[order.customer]
        assert str(row.id) == order.accepted["order_id"], (order, row)
        saga = ended[row.saga_id]
        if saga.status != order.expect or (order.reason or "") not in (saga.failure_reason or ""):
            wrong.append((order.key, saga.status, saga.failure_reason, order.expect))
    assert not wrong, wrong[:10]
    half = await _half_written(sessions)
    assert not any(half.values()), half
    assert not await _resent_steps(sessions)
    await assert_invariants(sessions, stock_totals=stock_totals, customers_used=list(found))
    assert await _parked_rows(sessions) == 0
    assert set((await _dead_letters(run)).values()) == {0}, await _dead_letters(run)
    consumed = await _consumed(run)
    assert consumed["failed"] == consumed["dead_lettered"] == 0, consumed
    assert consumed["applied"] > 0, consumed


async def _recovered_in_process(run: Running) -> None:
    """The same processes: none died and was restarted by the supervisor, and each of
    their LISTEN connections is back."""
    assert await children(run.site.settings.namespace, run.supervisor) == run.components
    assert not run.log_events("component died, restarting")
    await wait_for(
        lambda: asyncio.to_thread(_listeners, run),
        until=lambda n: all(n[c] >= 2 * k for c, k in LISTENERS.items()),
        within=30,
        interval=0.2,
        what="LISTEN connections back",
    )


def _listeners(run: Running) -> Counter[str]:
    """How many times a LISTEN connection started, per channel."""
    counts: Counter[str] = Counter()
    for entry in run.log_events("listening for saga ends"):
        counts[entry["channel"]] += 1
    for entry in run.log_events("listening for notifications"):
        counts[entry["channel"]] += 1
    return counts


# --- 1. crash: immediate-mode restart, or the postmaster killed ---------------------------


@pytest.mark.timeout(150)
@pytest.mark.parametrize("crash", ["restart -m immediate", "kill -9 postmaster"])
async def test_a_crashed_database_recovers_and_every_saga_comes_through(
    running: Running, admin_headers: Admin, private_postgres: PrivatePostgres, crash: str
) -> None:
    async def fault(run: Running, load: Load) -> None:
        if crash == "restart -m immediate":
            await asyncio.to_thread(private_postgres.restart_immediate)
        else:
            await asyncio.to_thread(private_postgres.kill_postmaster)
            await asyncio.to_thread(private_postgres.start)

    report = await _through(running, admin_headers, private_postgres, fault)

    # A real crash: the server replayed its WAL when it came back.
    assert report.recoveries == 1

    # Idle now, a crash costs no later request its answer: the pooled connections it
    # closed are replaced when checked out, not found dead by the next statement.
    sku = f"PG-IDLE-{uuid.uuid4().hex[:8]}"
    await stock(running.api, admin_headers, sku, 1)
    await asyncio.to_thread(private_postgres.restart_immediate)
    placed = await place(running.api, f"c-idle-{uuid.uuid4().hex[:8]}", sku, 1, 100)
    assert (await outcome(running.api, placed["saga_id"]))["status"] == "COMPLETED"


# --- 2. a window of refused connections ---------------------------------------------------


@pytest.mark.timeout(150)
async def test_while_the_database_refuses_connections_orders_get_503_and_messages_are_held(
    running: Running, admin_headers: Admin, private_postgres: PrivatePostgres
) -> None:
    seen: dict[str, object] = {}

    async def fault(run: Running, load: Load) -> None:
        refused_before = len(load.refusals)
        await asyncio.to_thread(private_postgres.stop, "fast")
        try:
            # Connections are refused: the API says so, with why, and so does the backend.
            api_ready = await wait_for(
                lambda: run.api.get("/readyz"),
                until=lambda r: r.status_code == 503,
                within=15,
                what="API /readyz 503",
            )
            side_ready = await wait_for(
                lambda: run.side.get("/readyz"),
                until=lambda r: r.status_code == 503,
                within=15,
                what="backend /readyz 503",
            )
            seen["api_ready"], seen["side_ready"] = api_ready.json(), side_ready.json()
            # Clients are refused while it lasts, and the consumers hold their messages
            # through more attempts than the delivery limit would have allowed.

            async def refused() -> int:
                return len(load.refusals) - refused_before

            await wait_for(
                refused,
                until=lambda n: n >= 3,
                within=15,
                what="orders refused with 503",
            )
            await wait_for(
                lambda: asyncio.to_thread(_longest_hold, run),
                until=lambda s: s >= SIXTH_HOLD_S,
                within=30,
                interval=0.1,
                what="a consumer holding its messages a sixth time",
            )
            seen["refused"] = len(load.refusals) - refused_before
        finally:
            await asyncio.to_thread(private_postgres.start)

    report = await _through(running, admin_headers, private_postgres, fault)

    api_ready = seen["api_ready"]
    assert isinstance(api_ready, dict)
    assert api_ready["postgres"] == "down" and api_ready["rabbitmq"] == "up", api_ready
    assert "postgres" in api_ready["detail"], api_ready
    side_ready = seen["side_ready"]
    assert isinstance(side_ready, dict)
    assert side_ready.get("postgres") == "down" and "rabbitmq" not in side_ready, side_ready
    assert report.recoveries == 0  # a clean stop: nothing to recover
    assert report.load.refusals
    # No busy loop while it lasted: the deadline sweeper, too, waited longer each time.
    sweeps = running.log_events("sweeper cannot reach the database")
    assert 0 < len(sweeps) <= 8, [s.get("retry_in_s") for s in sweeps]


def _longest_hold(run: Running) -> float:
    holds = run.log_events("database unavailable, holding messages")
    return max((float(h["retry_in_s"]) for h in holds), default=0.0)
