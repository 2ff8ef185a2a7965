"""The trip booking example (``examples/trip_booking``) on the real stack, run as a team
runs its own application: from the example's directory, ``sagaway migrate``,
``sagaway backend`` and ``sagaway api``, all with ``--app trips.app:app``.

The example is never imported here: its ``services`` package would meet the repository's
folder of that name on this process's import path. The processes import it from their
working directory, as ``--app`` does. The installation has its own database and broker
namespace, removed after the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import select

from sagaway.orchestrator.application import Names
from sagaway.orchestrator.participants import ORCHESTRATOR
from sagaway.orchestrator.tables import sagas
from sagaway.outbox.amqp import Topology
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.settings import Settings
from tests.e2e.conftest import LOGS, wait_answering
from tests.support import ADMIN_TOKEN, drop_database, free_port, isolated_settings, new_run_id

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trip_booking"
APP = "trips.app:app"
PARTICIPANTS = ("flights", "hotels", "payments")
TRIP: dict[str, Any] = {
    "traveler": "Ada",
    "destination": "Lisbon",
    "depart_on": "2027-03-01",
    "nights": 3,
    "card": "4242",
    "amount_cents": 45_000,
}


def _env(settings: Settings) -> dict[str, str]:
    return os.environ | {
        "SAGAWAY_DATABASE_URL": settings.database_url,
        "SAGAWAY_AMQP_URL": settings.amqp_url,
        "SAGAWAY_NAMESPACE": settings.namespace,
        "SAGAWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "SAGAWAY_LOG_FORMAT": "json",
        "SAGAWAY_APP": APP,
    }


@asynccontextmanager
async def _processes(settings: Settings, port: int) -> AsyncIterator[None]:
    """``sagaway backend`` and ``sagaway api`` from the example's directory."""
    running = _spawn(settings, port)
    try:
        yield
    finally:
        await asyncio.to_thread(_stop, running)


def _spawn(settings: Settings, port: int) -> list[subprocess.Popen[bytes]]:
    LOGS.mkdir(parents=True, exist_ok=True)
    running: list[subprocess.Popen[bytes]] = []
    try:
        for name, args in (("backend", ["backend"]), ("api", ["api", "--port", str(port)])):
            # The child keeps its own copy of the descriptor; ours can close at once.
            with (LOGS / f"{settings.namespace}-{name}.log").open("ab") as log:
                running.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "sagaway", *args, "--app", APP],
                        cwd=EXAMPLE,
                        env=_env(settings),
                        stdout=log,
                        stderr=log,
                    )
                )
    except BaseException:
        _stop(running)
        raise
    return running


def _stop(running: list[subprocess.Popen[bytes]]) -> None:
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _delete_topology(settings: Settings) -> None:
    names = Names(settings.namespace)
    queues = [names.queue(p) for p in (*PARTICIPANTS, ORCHESTRATOR)]
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
            await channel.queue_delete(Topology.dead_letter_queue(queue))
        for exchange in (
            names.commands_exchange,
            names.replies_exchange,
            names.dead_letter_exchange,
        ):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@pytest.fixture
async def trips_api() -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """The example migrated and running on a database and namespace of its own."""
    settings = isolated_settings(f"{new_run_id()}t{uuid.uuid4().hex[:6]}")
    port = free_port()
    try:
        migrated = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "sagaway", "migrate", "--app", APP],
            cwd=EXAMPLE,
            env=_env(settings),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr.decode()[-2000:]
        async with _processes(settings, port):
            url = f"http://127.0.0.1:{port}"
            await wait_answering(url, "/readyz", within=30, what="the trip API ready")
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                yield client, settings
    finally:
        await drop_database(settings)
        await _delete_topology(settings)


async def _book(client: httpx.AsyncClient, **changes: Any) -> tuple[str, str, dict[str, Any]]:
    """Book a trip and wait for its saga's end; returns the booking id, the saga id and
    the saga as ``GET /sagas/{id}`` shows it."""
    accepted = await client.post("/trips", json=TRIP | changes)
    assert accepted.status_code == 202, accepted.text
    booking_id, saga_id = accepted.json()["booking_id"], accepted.json()["saga_id"]
    saga = (await client.get(f"/sagas/{saga_id}", params={"wait_s": 20})).json()
    return booking_id, saga_id, saga


async def test_the_trip_example_completes_compensates_and_documents_its_commands(
    trips_api: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = trips_api

    booking_id, saga_id, saga = await _book(client)

    assert saga["status"] == "COMPLETED", saga
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            data = (
                await session.execute(select(sagas.c.data).where(sagas.c.id == uuid.UUID(saga_id)))
            ).scalar_one()
    finally:
        await engine.dispose()
    # The participants' outputs are merged into the saga's data.
    assert data["flight_ref"].startswith("FL-"), data
    assert data["hotel_ref"].startswith("HT-"), data
    trip = (await client.get(f"/trips/{booking_id}")).json()
    assert trip["status"] == "CONFIRMED", trip
    assert (trip["flight_ref"], trip["hotel_ref"]) == (data["flight_ref"], data["hotel_ref"])

    booking_id, saga_id, saga = await _book(client, destination="FULL")

    assert (saga["status"], saga["failure_reason"]) == ("COMPENSATED", "no_rooms"), saga
    history = (await client.get(f"/sagas/{saga_id}/history")).json()
    sent = [
        (e["message_type"], e["participant"], e["purpose"])
        for e in history
        if e["kind"] == "command_sent"
    ]
    assert ("CancelFlight", "flights", "compensation") in sent, sent
    trip = (await client.get(f"/trips/{booking_id}")).json()
    assert (trip["status"], trip["rejection_reason"]) == ("REJECTED", "no_rooms"), trip

    asyncapi = (await client.get("/asyncapi.json")).json()
    messages = set(asyncapi["components"]["messages"])
    assert {"ReserveFlight", "ReserveHotel", "ChargeCard"} <= messages, messages


def test_the_examples_own_tests_pass_with_the_test_kit() -> None:
    # The example's tests are a team's: harness tests of every path and saga_stack tests
    # on the real servers, found by pytest in the example's directory, with the kit's
    # plugin loaded through its entry point.
    env = {k: v for k, v in os.environ.items() if k != "SAGAWAY_APP"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
