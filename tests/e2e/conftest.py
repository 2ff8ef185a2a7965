"""The running system for end-to-end tests: every component as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sagaway.outbox.settings import Settings
from tests.e2e.span_receiver import SpanReceiver
from tests.support import ADMIN_TOKEN, free_port, wait_for

LOGS = Path(__file__).resolve().parents[1] / "artifacts" / "e2e-logs"


@dataclass
class System:
    """Component processes of one installation, started for the tests."""

    settings: Settings
    api_url: str
    traces_endpoint: str | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Environment the components see."""
        env = dict(os.environ)
        env.update(
            {
                "SAGAWAY_DATABASE_URL": self.settings.database_url,
                "SAGAWAY_AMQP_URL": self.settings.amqp_url,
                "SAGAWAY_NAMESPACE": self.settings.namespace,
                "SAGAWAY_ADMIN_TOKEN": ADMIN_TOKEN,
                "SAGAWAY_LOG_FORMAT": "json",
                "SAGAWAY_STEP_TIMEOUT_S": str(self.settings.step_timeout_s),
                "SAGAWAY_STEP_BACKOFF_S": str(self.settings.step_backoff_s),
                "SAGAWAY_STEP_MAX_ATTEMPTS": str(self.settings.step_max_attempts),
            }
        )
        if self.traces_endpoint is not None:
            # Every component exports its spans to the tests' receiver, batched briefly
            # so that a test waits a fraction of a second for a saga's spans.
            env.update(
                {
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.traces_endpoint,
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                }
            )
            env.pop("OTEL_SERVICE_NAME", None)
        return env

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """Start a component (``name`` is unique: ``relay``, ``relay-2``...)."""
        LOGS.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the descriptor; ours can close at once.
        with (LOGS / f"{self.settings.namespace}-{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "sagaway", *args],
                env=self.env() | (env or {}),
                stdout=log,
                stderr=log,
            )

    def stop(self, name: str, *, sig: signal.Signals = signal.SIGTERM) -> int:
        """Stop one component and return its exit code."""
        process = self.processes.pop(name)
        process.send_signal(sig)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        """Stop every component still running."""
        for name in list(self.processes):
            self.stop(name)


@pytest.fixture(scope="package")
def span_receiver() -> Iterator[SpanReceiver]:
    """Receives the spans every component exports (up before any component starts)."""
    receiver = SpanReceiver()
    yield receiver
    receiver.close()


# Package scope: the components stop when the e2e tests end, so they never compete
# with the integration tests' own consumers for the run's queues.
@pytest.fixture(scope="package")
def system(migrated: Settings, broker: object, span_receiver: SpanReceiver) -> Iterator[System]:
    """API, relay, orchestrator and the three workers, on this run's database, exporting
    their spans to ``span_receiver``."""
    port = free_port()
    # Short deadlines and backoff, so the failure scenarios (retries, deadlines,
    # FAILED) play out in seconds; generous enough that a healthy reply never misses.
    fast = migrated.model_copy(
        update={"step_timeout_s": 3.0, "step_backoff_s": 0.2, "step_max_attempts": 3}
    )
    sys_ = System(
        settings=fast, api_url=f"http://127.0.0.1:{port}", traces_endpoint=span_receiver.endpoint
    )
    sys_.start("api", "api", "--port", str(port))
    sys_.start("relay", "relay")
    sys_.start("orchestrator", "orchestrator")
    for participant in ("inventory", "payment", "notification"):
        sys_.start(participant, "worker", participant)
    yield sys_
    sys_.stop_all()


async def wait_answering(url: str, path: str, *, within: float, what: str) -> None:
    """Wait until ``GET path`` on the API at ``url`` answers 200 (it may not listen yet)."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:

        async def status() -> int:
            try:
                return (await client.get(path)).status_code
            except httpx.TransportError:
                return 0

        await wait_for(status, until=lambda s: s == 200, within=within, what=what)


@pytest.fixture(scope="package")
async def api(system: System) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the running API, once it reports ready."""
    await wait_answering(system.api_url, "/readyz", within=30, what="API ready")
    async with httpx.AsyncClient(base_url=system.api_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    """Authorization for /admin calls."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
