"""``start_dbos_peer``: the DBOS peer server as a subprocess, on fresh databases."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import httpx
import psycopg

from sagaway.bench_peer.databases import DEFAULT_PREFIX, PeerDatabases, drop, recreate
from sagaway.bench_peer.tuning import MODES, PeerTuning

STOP_GRACE_S = 10.0
READY_POLL_S = 0.1


class PeerUnavailable(Exception):
    """The peer cannot run: the ``bench`` extra is missing, or its server did not start."""


@dataclass(frozen=True)
class PeerServer:
    """A running peer.

    Attributes:
        url: Base URL of its HTTP API.
        pids: Its processes (one: the API and DBOS share it), for CPU accounting.
        databases: Its application and system databases.
    """

    url: str
    pids: list[int]
    databases: PeerDatabases = field(repr=False)


@contextlib.contextmanager
def start_dbos_peer(
    *,
    database_url: str,
    port: int,
    mode: str,
    host: str = "127.0.0.1",
    prefix: str = DEFAULT_PREFIX,
    tuning: PeerTuning | None = None,
    startup_timeout_s: float = 60.0,
) -> Iterator[PeerServer]:
    """Run the DBOS peer for the duration of a ``with`` block.

    Its databases (``<prefix>_app``, ``<prefix>_sys`` on the server of ``database_url``)
    are dropped and created fresh, the server is started and awaited on ``/readyz``; on
    exit it gets SIGTERM (then SIGKILL after :data:`STOP_GRACE_S`) and the databases are
    dropped.

    Args:
        database_url: Any URL of the PostgreSQL server to use (sagaway's will do).
        port: Port for the peer's HTTP API.
        mode: ``transactions`` (exactly-once datasource transactions) or ``steps``.
        host: Address for the peer's HTTP API.
        prefix: Names the two databases; distinct prefixes let runs share a server.
        tuning: DBOS settings; None for the peer's tuned defaults.
        startup_timeout_s: How long the server may take to answer ``/readyz``.

    Yields:
        The running server's URL and process ids.

    Raises:
        ValueError: An unknown mode.
        PeerUnavailable: DBOS is not installed, or the server did not become ready.
    """
    if mode not in MODES:
        raise ValueError(f"unknown peer mode {mode!r}; choose from {', '.join(MODES)}")
    if importlib.util.find_spec("dbos") is None:
        raise PeerUnavailable("DBOS Transact is not installed: pip install -e '.[bench]'")
    databases = PeerDatabases.derive(database_url, prefix=prefix)
    try:
        recreate(databases)
    except psycopg.Error as exc:
        raise PeerUnavailable(f"cannot create the peer's databases: {exc}") from exc
    try:
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "sagaway.bench_peer.dbos_app"),
                    f"--app-database-url={databases.app_url}",
                    f"--system-database-url={databases.system_url}",
                    f"--host={host}",
                    f"--port={port}",
                    f"--mode={mode}",
                    *(tuning or PeerTuning()).to_args(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                url = f"http://{host}:{port}"
                _wait_ready(process, url, log, startup_timeout_s)
                yield PeerServer(url=url, pids=[process.pid], databases=databases)
            finally:
                _stop(process)
    finally:
        drop(databases)


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, log: IO[bytes], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise PeerUnavailable(
                    f"the DBOS peer exited with {process.returncode}:\n{_tail(log)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/readyz").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise PeerUnavailable(
                    f"the DBOS peer did not answer {url}/readyz in {timeout_s:.0f} s:\n{_tail(log)}"
                )
            time.sleep(READY_POLL_S)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log: IO[bytes], limit: int = 4000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]
