"""An installation of one test's own: its database, its broker namespace, its processes.

Tests that start, stop, kill or starve components (or the servers under them) run
their own installation rather than the package's shared ``system``, so that whatever
consumes its queues is the process the test started and nothing else. The database is
dropped and the namespace's queues and exchanges deleted when the test ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.settings import Settings
from tests.e2e.conftest import System
from tests.support import delete_topology, drop_database, free_port, wait_for

Body = dict[str, Any]
Admin = dict[str, str]

TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED"}
# Generous for a cold start of a process on two shared cores.
START_S = 30.0


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

    @property
    def api_port(self) -> int:
        """The port the test's API listens on, once started."""
        return int(self.system.api_url.rsplit(":", 1)[1])


@asynccontextmanager
async def installation(settings: Settings) -> AsyncIterator[Installation]:
    """An installation on ``settings`` (not migrated: a test decides who migrates); on
    the way out its processes stop and its database and queues go."""
    system = System(settings=settings, api_url=f"http://127.0.0.1:{free_port()}")
    engine = create_engine(settings.database_url)
    try:
        yield Installation(settings=settings, system=system, engine=engine)
    finally:
        await asyncio.to_thread(system.stop_all)
        await engine.dispose()
        await delete_topology(settings)
        await drop_database(settings)


# --- processes of `sagaway up` ----------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """A process of the test's installation, from /proc."""

    pid: int
    ppid: int
    args: tuple[str, ...]


def marked(namespace: str) -> list[Proc]:
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


async def children(namespace: str, supervisor: int) -> list[Proc]:
    """The components ``sagaway up`` (pid ``supervisor``) runs, sorted by arguments."""
    procs = await asyncio.to_thread(marked, namespace)
    assert {p.pid for p in procs if p.ppid != supervisor} == {supervisor}, procs
    return sorted((p for p in procs if p.ppid == supervisor), key=lambda p: p.args)


# --- HTTP ----------------------------------------------------------------------------------


async def status(client: httpx.AsyncClient, path: str) -> int:
    """The status code of ``GET path`` (0 while nothing answers)."""
    try:
        return (await client.get(path)).status_code
    except httpx.TransportError:
        return 0


async def until_ready(client: httpx.AsyncClient, what: str) -> None:
    """Wait until ``/readyz`` answers 200."""
    await wait_for(
        lambda: status(client, "/readyz"), until=lambda s: s == 200, within=START_S, what=what
    )


async def stock(api: httpx.AsyncClient, admin: Admin, sku: str, units: int) -> None:
    """Set the stock free to reserve of ``sku``."""
    response = await api.put(f"/admin/inventory/{sku}", json={"available": units}, headers=admin)
    assert response.status_code == 200, response.text


async def credit(api: httpx.AsyncClient, admin: Admin, customer: str, cents: int) -> None:
    """Set the credit limit of ``customer``."""
    response = await api.put(
        f"/admin/customers/{customer}", json={"credit_limit_cents": cents}, headers=admin
    )
    assert response.status_code == 200, response.text


async def place(api: httpx.AsyncClient, customer: str, sku: str, qty: int, price: int) -> Body:
    """Place a one-line order; it must be accepted."""
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


async def outcome(api: httpx.AsyncClient, saga_id: str, *, within: float = 25) -> Body:
    """The saga once terminal: long polls of 10 s, each answered as soon as it ends."""

    async def poll() -> Body:
        response = await api.get(f"/sagas/{saga_id}", params={"wait_s": 10})
        assert response.status_code == 200, response.text
        body: Body = response.json()
        return body

    return await wait_for(
        poll, until=lambda s: s["status"] in TERMINAL, within=within, what=f"saga {saga_id} ends"
    )
