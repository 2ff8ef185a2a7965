"""``sagaway up``: every component as its own supervised process.

A component that dies is reported with its exit code and restarted with backoff;
SIGINT or SIGTERM stops them all: SIGTERM first (each finishes what it holds), then
SIGKILL for any that has not exited after the grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

GRACE_S = 15.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0
# Relay, orchestrator and the workers serve /metrics on this port + 1..5 (9401-9405).
DEFAULT_METRICS_PORT_BASE = 9400


@dataclass
class Child:
    """One supervised component."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    backoff_s: float = field(default=1.0)
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        """Spawn the process."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sagaway", *self.args], env=os.environ | self.env
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("component started", component=self.name, pid=self.process.pid)


BACKEND_PORT_OFFSET = 6
"""The shared backend process serves /metrics on base + 6, after the five ports the
split layout uses, so a bench finds either layout at fixed addresses."""


def components(
    api_port: int,
    api_host: str,
    metrics_port_base: int = 0,
    *,
    participants: Sequence[str],
    split: bool = False,
) -> list[Child]:
    """The processes of a full installation.

    By default two: the API, and ``sagaway backend`` (relay, orchestrator and a worker
    per participant sharing one event loop). With ``split`` each component gets a
    process of its own, a worker per name in ``participants``. With ``metrics_port_base``
    each non-HTTP process serves /metrics on a port above it (the API serves its own on
    its HTTP port): relay +1, orchestrator +2, the participants +3, +4, … in order (the
    order application's inventory +3, payment +4, notification +5), backend +6.
    """
    api = Child("api", ["api", "--port", str(api_port), "--host", api_host])
    if not split:
        backend = Child("backend", ["backend"])
        if metrics_port_base:
            backend.env["SAGAWAY_METRICS_PORT"] = str(metrics_port_base + BACKEND_PORT_OFFSET)
        return [api, backend]
    children = [
        api,
        Child("relay", ["relay"]),
        Child("orchestrator", ["orchestrator"]),
        *(Child(p, ["worker", p]) for p in participants),
    ]
    if metrics_port_base:
        for offset, child in enumerate(children[1:], start=1):
            child.env["SAGAWAY_METRICS_PORT"] = str(metrics_port_base + offset)
    return children


def supervise(children: list[Child]) -> int:
    """Run ``children`` until a signal; returns the exit code for ``sagaway up``."""
    stopping = False

    def on_signal(signum: int, _: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("stopping all components", signal=signal.Signals(signum).name)
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for child in children:
        child.start()
    while not stopping:
        now = time.monotonic()
        for child in children:
            if child.process is not None and child.process.poll() is not None:
                code = child.process.returncode
                if now - child.started_at > STABLE_AFTER_S:
                    child.backoff_s = 1.0
                child.restarts += 1
                child.restart_at = now + child.backoff_s
                log.error(
                    "component died, restarting",
                    component=child.name,
                    exit_code=code,
                    restart_in_s=child.backoff_s,
                    restarts=child.restarts,
                )
                child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
                child.process = None
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.start()
        time.sleep(0.2)
    return _stop_all(children)


def _stop_all(children: list[Child]) -> int:
    running = [c for c in children if c.process is not None and c.process.poll() is None]
    for child in running:
        assert child.process is not None
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("component did not stop in time, killing", component=child.name)
            child.process.kill()
            child.process.wait()
        log.info("component stopped", component=child.name, exit_code=child.process.returncode)
    return 0
