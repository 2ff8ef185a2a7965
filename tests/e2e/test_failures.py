"""Failure handling end to end: outages, silent participants, late and stray replies,
poison messages, operator retry and abort, and several instances of every component.

Each scenario drives the running system into trouble through the admin API or by
stopping a process, lets the saga play out (step deadline 3 s, backoff 0.2 s, three
attempts: see ``conftest.system``), and ends by checking the spec's invariants in the
database once every saga it created has settled. Faults are switched back off and
stopped components are started again in ``finally`` blocks, because the components are
shared by every e2e test of the run.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.application import Names
from sagaway.orchestrator.participants import ORCHESTRATOR
from sagaway.orchestrator.tables import inbox as orchestrator_inbox
from sagaway.orchestrator.tables import saga_events, sagas
from sagaway.outbox.amqp import Topology
from sagaway.outbox.envelope import Envelope
from sagaway.outbox.settings import Settings
from sagaway.services.ops.tables import admin_actions
from sagaway.services.payment.tables import inbox as payment_inbox
from sagaway.services.payment.tables import outbox as payment_outbox
from tests.e2e.conftest import LOGS, System
from tests.e2e.invariants import assert_invariants
from tests.support import wait_for

Sessions = async_sessionmaker[AsyncSession]
Body = dict[str, Any]
Admin = dict[str, str]

TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED"}
# A saga failed by deadlines: three attempts of 3 s plus backoff, and some slack.
DEADLINE_FAILURE_S = 40.0


# --- helpers ---------------------------------------------------------------------------


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def _sku(tag: str = "") -> str:
    return f"FAIL{tag}-{_uid()}"


def _customer(tag: str = "") -> str:
    return f"c-fail{tag}-{_uid()}"


async def _stock(api: httpx.AsyncClient, admin: Admin, sku: str, units: int) -> None:
    response = await api.put(f"/admin/inventory/{sku}", json={"available": units}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["reserved"] == 0, "a fresh SKU has nothing reserved"


async def _credit(api: httpx.AsyncClient, admin: Admin, customer: str, cents: int) -> None:
    response = await api.put(
        f"/admin/customers/{customer}", json={"credit_limit_cents": cents}, headers=admin
    )
    assert response.status_code == 200, response.text


async def _place(
    api: httpx.AsyncClient, customer: str, lines: Iterable[tuple[str, int, int]]
) -> Body:
    """Place an order of ``(sku, quantity, unit_price_cents)`` lines."""
    items = [{"sku": s, "quantity": q, "unit_price_cents": p} for s, q, p in lines]
    response = await api.post("/orders", json={"customer_id": customer, "items": items})
    assert response.status_code == 202, response.text
    placed: Body = response.json()
    return placed


async def _saga(api: httpx.AsyncClient, saga_id: str) -> Body:
    response = await api.get(f"/sagas/{saga_id}")
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def _order(api: httpx.AsyncClient, order_id: str) -> Body:
    response = await api.get(f"/orders/{order_id}")
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def _history(api: httpx.AsyncClient, saga_id: str) -> list[Body]:
    response = await api.get(f"/sagas/{saga_id}/history")
    assert response.status_code == 200, response.text
    entries: list[Body] = response.json()
    return entries


async def _level(api: httpx.AsyncClient, admin: Admin, sku: str) -> Body:
    response = await api.get(f"/admin/inventory/{sku}", headers=admin)
    assert response.status_code == 200, response.text
    body: Body = response.json()
    return body


async def _authorized(api: httpx.AsyncClient, admin: Admin, customer: str) -> int:
    response = await api.get(f"/admin/customers/{customer}", headers=admin)
    assert response.status_code == 200, response.text
    return int(response.json()["authorized_cents"])


async def _settled(
    api: httpx.AsyncClient, saga_id: str, *, within: float = 20.0, expect: str | None = None
) -> Body:
    """Wait until the saga is COMPLETED, COMPENSATED or FAILED (``expect``, if given)."""
    saga = await wait_for(
        lambda: _saga(api, saga_id),
        until=lambda s: s["status"] in TERMINAL,
        within=within,
        what=f"saga {saga_id} terminal",
    )
    if expect is not None:
        assert saga["status"] == expect, saga
    return saga


def _steps(saga: Body) -> dict[str, Body]:
    return {s["name"]: s for s in saga["steps"]}


def _kinds(history: list[Body]) -> Counter[str]:
    return Counter(h["kind"] for h in history)


def _authorize_commands(history: list[Body]) -> list[uuid.UUID]:
    """Message ids of every AuthorizePayment attempt the saga sent."""
    return [
        uuid.UUID(h["message_id"])
        for h in history
        if h["kind"] == "command_sent" and h["message_type"] == "AuthorizePayment"
    ]


async def _retry(api: httpx.AsyncClient, admin: Admin, saga_id: str) -> httpx.Response:
    return await api.post(f"/admin/sagas/{saga_id}/retry", headers=admin)


async def _fault(api: httpx.AsyncClient, admin: Admin, participant: str, mode: str) -> None:
    response = await api.put(f"/admin/faults/{participant}", json={"mode": mode}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"participant": participant, "mode": mode}


@asynccontextmanager
async def _outage(api: httpx.AsyncClient, admin: Admin, participant: str) -> AsyncIterator[None]:
    """``participant`` answers every command with a technical error until the block ends."""
    await _fault(api, admin, participant, "unavailable")
    try:
        yield
    finally:
        await _fault(api, admin, participant, "ok")


@asynccontextmanager
async def _worker_down(
    system: System, broker: AbstractRobustConnection, participant: str
) -> AsyncIterator[None]:
    """The participant's only worker is stopped for the block, then started again; on
    leaving, wait until it consumes its queue once more."""
    queue = Names(system.settings.namespace).queue(participant)
    try:
        assert await asyncio.to_thread(system.stop, participant) == 0
        await wait_for(
            lambda: _consumers(broker, queue), until=lambda n: n == 0, what="worker gone"
        )
        yield
    finally:
        if participant not in system.processes:
            system.start(participant, "worker", participant)
        await _wait_consumers(broker, queue, 1)


async def _wait_consumers(broker: AbstractRobustConnection, queue: str, n: int) -> None:
    await wait_for(
        lambda: _consumers(broker, queue),
        until=lambda found: found == n,
        within=30,
        what=f"{n} consumer(s) on {queue}",
    )


async def _consumers(broker: AbstractRobustConnection, queue: str) -> int:
    async with broker.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.consumer_count or 0


async def _publish(
    broker: AbstractRobustConnection,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    message_id: str,
    message_type: str | None = None,
) -> None:
    """Publish like the relay does: persistent, JSON, confirmed by the broker."""
    async with broker.channel(publisher_confirms=True) as channel:
        target = await channel.get_exchange(exchange)
        await target.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                type=message_type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )


async def _publish_reply(broker: AbstractRobustConnection, names: Names, reply: Envelope) -> None:
    await _publish(
        broker,
        names.replies_exchange,
        ORCHESTRATOR,
        reply.to_bytes(),
        message_id=str(reply.message_id),
        message_type=reply.message_type,
    )


async def _processed(sessions: Sessions, inbox: Table, message_ids: Iterable[uuid.UUID]) -> int:
    """How many of ``message_ids`` the inbox ``inbox`` holds."""
    async with sessions() as session:
        n = await session.scalar(
            select(func.count()).select_from(inbox).where(inbox.c.message_id.in_(list(message_ids)))
        )
    return n or 0


async def _saga_rows(sessions: Sessions, saga_id: uuid.UUID) -> tuple[int, int]:
    """Rows of ``saga_id`` in sagas.sagas and sagas.saga_events."""
    async with sessions() as session:
        n_sagas = await session.scalar(
            select(func.count()).select_from(sagas).where(sagas.c.id == saga_id)
        )
        n_events = await session.scalar(
            select(func.count()).select_from(saga_events).where(saga_events.c.saga_id == saga_id)
        )
    return n_sagas or 0, n_events or 0


def _log_events(system: System, component: str) -> list[Body]:
    """The JSON log lines a component (every run of it under this name) wrote."""
    path = LOGS / f"{system.settings.namespace}-{component}.log"
    if not path.exists():
        return []
    events: list[Body] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line still being written
    return events


async def _remove_dead_letter(
    broker: AbstractRobustConnection, queue: str, message_id: str
) -> None:
    """Take the one dead letter this test caused off ``queue``; leave the rest in place."""
    async with broker.channel() as channel:
        dead = await channel.get_queue(queue)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []
        try:
            while (message := await dead.get(no_ack=False, fail=False)) is not None:
                if message.message_id == message_id:
                    await message.ack()
                    break
                held.append(message)
        finally:
            for message in held:
                await message.nack(requeue=True)


async def _healthy_order_completes(
    api: httpx.AsyncClient, admin: Admin, sessions: Sessions
) -> None:
    """A fresh order goes all the way: the consumers are alive and well."""
    sku, customer = _sku("-alive"), _customer("-alive")
    await _stock(api, admin, sku, 5)
    placed = await _place(api, customer, [(sku, 1, 700)])
    await _settled(api, placed["saga_id"], expect="COMPLETED")
    await assert_invariants(sessions, stock_totals={sku: 5}, customers_used=[customer])


# --- 1. outage → FAILED → fault cleared → admin retry → COMPLETED -----------------------


async def test_outage_fails_the_saga_and_an_admin_retry_completes_it(
    api: httpx.AsyncClient, admin_headers: Admin, sessions: Sessions
) -> None:
    sku, customer = _sku(), _customer()
    await _stock(api, admin_headers, sku, 10)
    await _credit(api, admin_headers, customer, 100_000)

    async with _outage(api, admin_headers, "payment"):
        placed = await _place(api, customer, [(sku, 2, 1500)])
        saga = await _settled(api, placed["saga_id"], expect="FAILED")

        assert "authorize_payment" in saga["failure_reason"], saga
        steps = _steps(saga)
        assert steps["reserve_inventory"]["status"] == "SUCCEEDED"
        assert steps["authorize_payment"]["status"] == "FAILED"
        assert steps["authorize_payment"]["attempts"] == 3
        assert "unavailable" in steps["authorize_payment"]["error"]
        assert steps["approve_order"]["status"] == "PENDING"
        # Nothing is compensated until an operator decides: the reservation is held.
        order = await _order(api, placed["order_id"])
        assert (order["status"], order["rejection_reason"]) == ("PENDING", None)
        assert await _level(api, admin_headers, sku) == {"sku": sku, "available": 8, "reserved": 2}
        assert await _authorized(api, admin_headers, customer) == 0
        listed = await api.get(
            "/admin/sagas", params={"status": "FAILED", "limit": 500}, headers=admin_headers
        )
        assert listed.status_code == 200, listed.text
        assert placed["saga_id"] in {s["saga_id"] for s in listed.json()["items"]}

    retried = await _retry(api, admin_headers, placed["saga_id"])

    assert retried.status_code == 202, retried.text
    assert retried.json() == {"saga_id": placed["saga_id"], "status": "RUNNING"}
    # The retry committed before its answer: the old FAILED is never seen again. (A
    # healthy system may even have finished already.)
    assert (await _saga(api, placed["saga_id"]))["status"] in {"RUNNING", "COMPLETED"}
    saga = await _settled(api, placed["saga_id"], expect="COMPLETED")
    assert saga["failure_reason"] is None
    assert all(s["status"] == "SUCCEEDED" for s in saga["steps"]), saga
    history = await _history(api, placed["saga_id"])
    assert _kinds(history)["admin_retry"] == 1, history
    assert (await _order(api, placed["order_id"]))["status"] == "APPROVED"
    listed = await api.get(
        "/admin/sagas", params={"status": "FAILED", "limit": 500}, headers=admin_headers
    )
    assert placed["saga_id"] not in {s["saga_id"] for s in listed.json()["items"]}
    await assert_invariants(sessions, stock_totals={sku: 10}, customers_used=[customer])


# --- 2. abort → COMPENSATED, stock and credit restored ----------------------------------


async def test_abort_compensates_a_failed_saga_and_restores_stock_and_credit(
    api: httpx.AsyncClient, admin_headers: Admin, sessions: Sessions
) -> None:
    sku, customer = _sku(), _customer()
    await _stock(api, admin_headers, sku, 6)
    await _credit(api, admin_headers, customer, 50_000)
    async with _outage(api, admin_headers, "payment"):
        placed = await _place(api, customer, [(sku, 4, 2500)])
        await _settled(api, placed["saga_id"], expect="FAILED")
        assert await _level(api, admin_headers, sku) == {"sku": sku, "available": 2, "reserved": 4}
    # The outage is over before the abort: compensating talks to payment too.

    aborted = await api.post(f"/admin/sagas/{placed['saga_id']}/abort", headers=admin_headers)

    assert aborted.status_code == 202, aborted.text
    assert aborted.json()["saga_id"] == placed["saga_id"]
    assert aborted.json()["status"] != "FAILED"
    saga = await _settled(api, placed["saga_id"], expect="COMPENSATED")
    assert saga["failure_reason"] == "aborted"
    assert _steps(saga)["reserve_inventory"]["status"] == "COMPENSATED"
    order = await _order(api, placed["order_id"])
    assert (order["status"], order["rejection_reason"]) == ("REJECTED", "aborted")
    assert await _level(api, admin_headers, sku) == {"sku": sku, "available": 6, "reserved": 0}
    assert await _authorized(api, admin_headers, customer) == 0
    assert _kinds(await _history(api, placed["saga_id"]))["admin_abort"] == 1
    await assert_invariants(sessions, stock_totals={sku: 6}, customers_used=[customer])


# --- 3. outage after the pivot: FAILED with the order APPROVED; abort refused -----------


async def test_notification_outage_after_the_pivot_cannot_be_aborted_only_retried(
    api: httpx.AsyncClient, admin_headers: Admin, sessions: Sessions
) -> None:
    sku, customer = _sku(), _customer()
    await _stock(api, admin_headers, sku, 3)
    await _credit(api, admin_headers, customer, 10_000)

    async with _outage(api, admin_headers, "notification"):
        placed = await _place(api, customer, [(sku, 3, 1000)])
        saga = await _settled(api, placed["saga_id"], expect="FAILED")

        assert "notify_customer" in saga["failure_reason"], saga
        steps = _steps(saga)
        assert steps["approve_order"]["status"] == "SUCCEEDED"
        assert (steps["notify_customer"]["status"], steps["notify_customer"]["attempts"]) == (
            "FAILED",
            3,
        )
        assert (await _order(api, placed["order_id"]))["status"] == "APPROVED"
        aborted = await api.post(f"/admin/sagas/{placed['saga_id']}/abort", headers=admin_headers)
        assert aborted.status_code == 409, aborted.text
        assert "detail" in aborted.json()
        assert (await _saga(api, placed["saga_id"]))["status"] == "FAILED"

    retried = await _retry(api, admin_headers, placed["saga_id"])

    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "RUNNING"
    saga = await _settled(api, placed["saga_id"], expect="COMPLETED")
    assert _steps(saga)["notify_customer"]["status"] == "SUCCEEDED"
    assert await _level(api, admin_headers, sku) == {"sku": sku, "available": 0, "reserved": 3}
    assert await _authorized(api, admin_headers, customer) == 3000
    await assert_invariants(sessions, stock_totals={sku: 3}, customers_used=[customer])


# --- a compensation that fails, then is retried ----------------------------------------


async def test_failed_compensation_is_retried_to_compensated_and_cannot_be_aborted(
    api: httpx.AsyncClient,
    admin_headers: Admin,
    sessions: Sessions,
    system: System,
    broker: AbstractRobustConnection,
) -> None:
    sku, customer = _sku(), _customer()
    await _stock(api, admin_headers, sku, 5)
    await _credit(api, admin_headers, customer, 500)
    try:
        # Hold the payment answer back until inventory is down, so the reservation
        # succeeds and only its release meets the outage.
        async with _worker_down(system, broker, "payment"):
            placed = await _place(api, customer, [(sku, 2, 1000)])
            await wait_for(
                lambda: _saga(api, placed["saga_id"]),
                until=lambda s: _steps(s)["authorize_payment"]["status"] == "RUNNING",
                what="stock reserved, payment asked",
            )
            await _fault(api, admin_headers, "inventory", "unavailable")
        saga = await _settled(api, placed["saga_id"], expect="FAILED")

        assert "reserve_inventory" in saga["failure_reason"], saga
        steps = _steps(saga)
        assert steps["authorize_payment"]["status"] == "FAILED"
        assert steps["authorize_payment"]["error"] == "insufficient_funds"
        # Nothing more is undone until an operator decides: the reservation is held.
        assert await _level(api, admin_headers, sku) == {"sku": sku, "available": 3, "reserved": 2}
        assert (await _order(api, placed["order_id"]))["status"] == "PENDING"
        aborted = await api.post(f"/admin/sagas/{placed['saga_id']}/abort", headers=admin_headers)
        assert aborted.status_code == 409, aborted.text
    finally:
        await _fault(api, admin_headers, "inventory", "ok")

    retried = await _retry(api, admin_headers, placed["saga_id"])

    assert retried.status_code == 202, retried.text
    assert retried.json() == {"saga_id": placed["saga_id"], "status": "COMPENSATING"}
    saga = await _settled(api, placed["saga_id"], expect="COMPENSATED")
    assert "insufficient_funds" in saga["failure_reason"], saga
    assert _steps(saga)["reserve_inventory"]["status"] == "COMPENSATED"
    order = await _order(api, placed["order_id"])
    assert (order["status"], order["rejection_reason"]) == ("REJECTED", "insufficient_funds")
    assert await _level(api, admin_headers, sku) == {"sku": sku, "available": 5, "reserved": 0}
    await assert_invariants(sessions, stock_totals={sku: 5}, customers_used=[customer])


# --- 4. a participant that never answers ------------------------------------------------


async def test_silent_participant_fails_by_deadline_and_a_retry_authorizes_once(
    api: httpx.AsyncClient,
    admin_headers: Admin,
    sessions: Sessions,
    system: System,
    broker: AbstractRobustConnection,
) -> None:
    sku, customer = _sku(), _customer()
    await _stock(api, admin_headers, sku, 4)
    await _credit(api, admin_headers, customer, 20_000)

    async with _worker_down(system, broker, "payment"):
        placed = await _place(api, customer, [(sku, 1, 4200)])
        saga = await _settled(api, placed["saga_id"], within=DEADLINE_FAILURE_S, expect="FAILED")

        assert "authorize_payment" in saga["failure_reason"], saga
        assert "no reply" in saga["failure_reason"], saga
        assert _steps(saga)["authorize_payment"]["attempts"] == 3
        assert (await _order(api, placed["order_id"]))["status"] == "PENDING"
        assert await _level(api, admin_headers, sku) == {"sku": sku, "available": 3, "reserved": 1}
        assert len(_authorize_commands(await _history(api, placed["saga_id"]))) == 3

    # Three unanswered AuthorizePayment attempts wait in the queue for the restarted
    # worker; the retry adds a fourth. All act on the saga's one authorization.
    retried = await _retry(api, admin_headers, placed["saga_id"])
    assert retried.status_code == 202, retried.text
    await _settled(api, placed["saga_id"], expect="COMPLETED")

    sent = _authorize_commands(await _history(api, placed["saga_id"]))
    assert len(sent) == 4
    await wait_for(
        lambda: _processed(sessions, payment_inbox, sent),
        until=lambda n: n == len(sent),
        what="every AuthorizePayment attempt handled",
    )
    # Every reply but the one to the attempt in flight is stale, and only recorded.
    history = await wait_for(
        lambda: _history(api, placed["saga_id"]),
        until=lambda h: _kinds(h)["stale_reply"] >= len(sent) - 1,
        what="stale replies recorded",
    )
    assert _kinds(history)["stale_reply"] == len(sent) - 1
    assert (await _saga(api, placed["saga_id"]))["status"] == "COMPLETED"
    assert await _authorized(api, admin_headers, customer) == 4200
    await assert_invariants(sessions, stock_totals={sku: 4}, customers_used=[customer])


# --- 5. a reply that comes after its deadline -------------------------------------------


async def test_late_reply_is_recorded_as_stale_and_the_saga_completes_once(
    api: httpx.AsyncClient,
    admin_headers: Admin,
    sessions: Sessions,
    system: System,
    broker: AbstractRobustConnection,
) -> None:
    sku, customer = _sku(), _customer()
    await _stock(api, admin_headers, sku, 2)
    await _credit(api, admin_headers, customer, 9_000)

    async with _worker_down(system, broker, "payment"):
        placed = await _place(api, customer, [(sku, 2, 3000)])
        # The first attempt's deadline passed and a second attempt went out.
        await wait_for(
            lambda: _history(api, placed["saga_id"]),
            until=lambda h: len(_authorize_commands(h)) >= 2,
            within=DEADLINE_FAILURE_S,
            what="second AuthorizePayment attempt sent",
        )

    # The worker now answers the first attempt late (stale) and the later one in time.
    saga = await _settled(api, placed["saga_id"], within=DEADLINE_FAILURE_S, expect="COMPLETED")
    assert saga["failure_reason"] is None
    sent = _authorize_commands(await _history(api, placed["saga_id"]))
    assert len(sent) >= 2
    await wait_for(
        lambda: _processed(sessions, payment_inbox, sent),
        until=lambda n: n == len(sent),
        what="every AuthorizePayment attempt handled",
    )
    # One reply moved the saga on; every other one (the late answer to the first
    # attempt among them) arrived for an attempt no longer in flight. The worker may
    # answer the attempts in any order, so the stale ones can land after COMPLETED.
    history = await wait_for(
        lambda: _history(api, placed["saga_id"]),
        until=lambda h: _kinds(h)["stale_reply"] >= len(sent) - 1,
        what="stale replies recorded",
    )
    assert _kinds(history)["stale_reply"] == len(sent) - 1, history
    assert _kinds(history)["admin_retry"] == 0
    assert any(h["kind"] == "attempt_failed" and h["outcome"] == "timeout" for h in history), (
        "the first attempt's deadline is in the history"
    )
    assert await _authorized(api, admin_headers, customer) == 6000
    await assert_invariants(sessions, stock_totals={sku: 2}, customers_used=[customer])


# --- 6. concurrent admin retries --------------------------------------------------------


async def test_of_twenty_concurrent_retries_exactly_one_is_accepted(
    api: httpx.AsyncClient, admin_headers: Admin, sessions: Sessions
) -> None:
    sku, customer = _sku(), _customer()
    await _stock(api, admin_headers, sku, 5)
    await _credit(api, admin_headers, customer, 5_000)
    async with _outage(api, admin_headers, "payment"):
        placed = await _place(api, customer, [(sku, 1, 999)])
        await _settled(api, placed["saga_id"], expect="FAILED")
    # With the outage over, the accepted retry cannot fail back to FAILED (which would
    # let a straggler's retry be accepted too) while the others are still in flight.

    responses = await asyncio.gather(
        *(_retry(api, admin_headers, placed["saga_id"]) for _ in range(20))
    )

    assert Counter(r.status_code for r in responses) == {202: 1, 409: 19}, [
        (r.status_code, r.text) for r in responses
    ]
    assert all("detail" in r.json() for r in responses if r.status_code == 409)
    await _settled(api, placed["saga_id"], expect="COMPLETED")
    assert _kinds(await _history(api, placed["saga_id"]))["admin_retry"] == 1
    async with sessions() as session:
        audited = await session.scalar(
            select(func.count())
            .select_from(admin_actions)
            .where(
                admin_actions.c.action == "saga.retry",
                admin_actions.c.target == placed["saga_id"],
            )
        )
    assert audited == 1
    await assert_invariants(sessions, stock_totals={sku: 5}, customers_used=[customer])


# --- 7. a poison message is dead-lettered -----------------------------------------------


async def test_unparseable_command_is_dead_lettered_and_the_consumer_lives_on(
    api: httpx.AsyncClient,
    admin_headers: Admin,
    sessions: Sessions,
    migrated: Settings,
    broker: AbstractRobustConnection,
) -> None:
    names = Names(migrated.namespace)
    dead_queue = Topology.dead_letter_queue(names.queue("inventory"))
    poison_id = f"poison-{_uid()}"
    body = b'{"message_type": "ReserveInventory", "saga_id": "not-a-uuid", oops'

    await _publish(broker, names.commands_exchange, "inventory", body, message_id=poison_id)
    try:

        async def dead_letter() -> Body | None:
            response = await api.get(
                "/admin/dead-letters", params={"limit": 100}, headers=admin_headers
            )
            assert response.status_code == 200, response.text
            for queue in response.json():
                for message in queue["messages"]:
                    if message["message_id"] == poison_id:
                        return {"queue": queue["queue"], "count": queue["count"], **message}
            return None

        letter = await wait_for(dead_letter, what="poison message dead-lettered")
        assert letter is not None

        assert letter["queue"] == dead_queue
        assert letter["count"] >= 1
        assert letter["reason"], letter
        assert letter["body"] == body.decode()
        await _healthy_order_completes(api, admin_headers, sessions)
    finally:
        await _remove_dead_letter(broker, dead_queue, poison_id)


# --- 8. a reply for a saga that does not exist ------------------------------------------


async def test_reply_for_an_unknown_saga_creates_nothing_and_is_dropped(
    api: httpx.AsyncClient,
    admin_headers: Admin,
    sessions: Sessions,
    migrated: Settings,
    broker: AbstractRobustConnection,
) -> None:
    names = Names(migrated.namespace)
    ghost = uuid.uuid4()
    reply = Envelope(
        message_type="PaymentAuthorized",
        saga_id=ghost,
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        payload={"outcome": "succeeded", "reason": None},
    )

    await _publish_reply(broker, names, reply)

    # The orchestrator took it (its inbox records every reply it consumed) ...
    await wait_for(
        lambda: _processed(sessions, orchestrator_inbox, [reply.message_id]),
        until=lambda n: n == 1,
        what="stray reply consumed",
    )
    # ... and made nothing of it.
    assert await _saga_rows(sessions, ghost) == (0, 0)
    assert (await api.get(f"/sagas/{ghost}")).status_code == 404
    await _healthy_order_completes(api, admin_headers, sessions)


# --- duplicate replies ------------------------------------------------------------------


async def test_redelivered_reply_changes_nothing(
    api: httpx.AsyncClient,
    admin_headers: Admin,
    sessions: Sessions,
    migrated: Settings,
    broker: AbstractRobustConnection,
    system: System,
) -> None:
    names = Names(migrated.namespace)
    sku, customer = _sku(), _customer()
    await _stock(api, admin_headers, sku, 3)
    placed = await _place(api, customer, [(sku, 1, 1234)])
    saga_before = await _settled(api, placed["saga_id"], expect="COMPLETED")
    history_before = await _history(api, placed["saga_id"])
    [authorized] = [
        h
        for h in history_before
        if h["kind"] == "reply_received" and h["detail"].startswith("PaymentAuthorized")
    ]
    async with sessions() as session:
        raw = await session.scalar(
            select(payment_outbox.c.body).where(
                payment_outbox.c.message_id == uuid.UUID(authorized["message_id"])
            )
        )
    assert raw is not None
    duplicate = Envelope.from_bytes(raw)

    def dropped() -> int:
        return sum(
            1
            for name in list(system.processes)
            if name.startswith("orchestrator")
            for e in _log_events(system, name)
            if e.get("event") == "duplicate message dropped"
            and e.get("message_id") == str(duplicate.message_id)
        )

    async def dropped_async() -> int:
        return dropped()

    before = dropped()
    await _publish_reply(broker, names, duplicate)

    # The inbox recognised the message id and dropped it before the engine saw it.
    await wait_for(dropped_async, until=lambda n: n == before + 1, what="duplicate dropped")
    assert await _history(api, placed["saga_id"]) == history_before
    assert await _saga(api, placed["saga_id"]) == saga_before
    assert await _authorized(api, admin_headers, customer) == 1234
    await assert_invariants(sessions, stock_totals={sku: 3}, customers_used=[customer])


# --- 9. several instances of every component --------------------------------------------


@dataclass(frozen=True)
class Planned:
    """An order to place and the outcome it must have, whatever runs concurrently."""

    customer: str
    lines: tuple[tuple[str, int, int], ...]
    status: str
    reason: str | None = None


EXTRA = {
    "relay-2": ("relay",),
    "orchestrator-2": ("orchestrator",),
    "inventory-2": ("worker", "inventory"),
    "payment-2": ("worker", "payment"),
    "notification-2": ("worker", "notification"),
}


async def test_scaled_out_system_gives_every_saga_its_predicted_outcome(
    api: httpx.AsyncClient,
    admin_headers: Admin,
    sessions: Sessions,
    system: System,
    broker: AbstractRobustConnection,
) -> None:
    names = Names(system.settings.namespace)
    plenty, spare, scarce, unknown = _sku("-plenty"), _sku("-spare"), _sku("-scarce"), _sku("-x")
    stock_totals = {plenty: 1_000, spare: 500, scarce: 1}
    rich = [_customer(f"-rich{i}") for i in range(5)]
    poor, unlucky = _customer("-poor"), _customer("-oos")
    rng = random.Random(7)
    plan: list[Planned] = []
    # Completed: stock and credit are ample for all of them together.
    for i in range(24):
        lines = [(plenty, rng.randint(1, 3), rng.randint(100, 900))]
        if i % 3 == 0:
            lines.append((spare, rng.randint(1, 4), 250))
        plan.append(Planned(rich[i % len(rich)], tuple(lines), "COMPLETED"))
    # Out of stock whatever else happens: more than the SKU ever had, an unknown SKU,
    # and an order that could have had its plentiful line but must reserve all or none.
    for i in range(8):
        lines = [(scarce, 2, 100)] if i % 3 else [(unknown, 1, 100)]
        if i % 2:
            lines.insert(0, (plenty, 1, 100))
        plan.append(Planned(unlucky, tuple(lines), "COMPENSATED", "out_of_stock"))
    # Insufficient funds: each order alone exceeds the customer's whole limit.
    for _ in range(8):
        plan.append(Planned(poor, ((spare, 1, 1_000),), "COMPENSATED", "insufficient_funds"))
    rng.shuffle(plan)

    for sku, units in stock_totals.items():
        await _stock(api, admin_headers, sku, units)
    for customer in rich:
        await _credit(api, admin_headers, customer, 1_000_000)
    await _credit(api, admin_headers, poor, 999)

    codes: dict[str, int] = {}
    try:
        for name, args in EXTRA.items():
            system.start(name, *args)
        for queue in map(names.queue, ("orchestrator", "inventory", "payment", "notification")):
            await _wait_consumers(broker, queue, 2)

        async def relay_started() -> bool:
            return any(e.get("event") == "relay started" for e in _log_events(system, "relay-2"))

        await wait_for(relay_started, within=30, what="second relay started")

        gate = asyncio.Semaphore(10)

        async def place(p: Planned) -> Body:
            async with gate:
                return await _place(api, p.customer, p.lines)

        placed = await asyncio.gather(*(place(p) for p in plan))

        async def unsettled() -> list[str]:
            sagas_now = await asyncio.gather(*(_saga(api, b["saga_id"]) for b in placed))
            return [s["saga_id"] for s in sagas_now if s["status"] not in TERMINAL]

        await wait_for(unsettled, until=lambda left: not left, within=60, what="all settled")

        for p, b in zip(plan, placed, strict=True):
            saga = await _saga(api, b["saga_id"])
            order = await _order(api, b["order_id"])
            assert saga["status"] == p.status, (p, saga)
            assert order["rejection_reason"] == p.reason, (p, order)
            if p.reason is not None:
                assert p.reason in saga["failure_reason"], (p, saga)
        await assert_invariants(
            sessions, stock_totals=stock_totals, customers_used=[*rich, poor, unlucky]
        )
        ours = {b["saga_id"] for b in placed}
        for name in ("orchestrator-2", "inventory-2", "payment-2", "notification-2"):
            handled = [e for e in _log_events(system, name) if e.get("saga_id") in ours]
            assert handled, f"{name} took no part in the work"
    finally:
        for name in EXTRA:
            if name in system.processes:
                codes[name] = await asyncio.to_thread(system.stop, name)
    assert codes == dict.fromkeys(EXTRA, 0), "the extra components did not stop cleanly"
