"""The OpenAPI document is exact (SPEC "HTTP API"): schemathesis, with every check and
every phase (examples, coverage, fuzzing and the stateful sequences), finds nothing.

Every request the document calls valid must be accepted (``2.0`` is an integer, any
string of the cursor's form is a cursor), every invalid one refused, and every answer
must have a documented status, content type, headers and schema: ``405`` with the
right ``Allow``, admin calls with and without the bearer token.

It runs the ``schemathesis`` command line, as a user would, with a fixed seed and a
bounded number of examples per operation, and reads its JSON report. The API and the
backend run on an installation of the test's own: schemathesis sets fault modes, stock
and credit, and retries sagas, which the package's shared system must not see.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sagaway.migrate import migrate
from tests.e2e.conftest import LOGS, System, wait_answering
from tests.support import (
    ADMIN_TOKEN,
    delete_topology,
    drop_database,
    free_port,
    isolated_settings,
    new_run_id,
)

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 11
# Per operation and phase: enough for the coverage phase's boundary values and a few
# dozen generated cases each, within about a minute on two busy cores.
MAX_EXAMPLES = 10
PHASES = ("examples", "coverage", "fuzzing", "stateful")
RUN_S = 240.0


@pytest.fixture(scope="module")
async def own_api() -> AsyncIterator[str]:
    """The API and the backend on a fresh database and namespace; gone afterwards."""
    settings = isolated_settings(
        f"{new_run_id()}f{uuid.uuid4().hex[:6]}",
        # Short deadlines, as in the shared system: a saga that schemathesis sent
        # into an outage ends FAILED in seconds, and a long poll on it with it.
        step_timeout_s=3.0,
        step_backoff_s=0.2,
        step_max_attempts=3,
    )
    port = free_port()
    system = System(settings=settings, api_url=f"http://127.0.0.1:{port}")
    try:
        await migrate(settings)
        system.start("api", "api", "--port", str(port))
        system.start("backend", "backend")
        await wait_answering(system.api_url, "/readyz", within=60, what="own API ready")
        yield system.api_url
    finally:
        await asyncio.to_thread(system.stop_all)
        await delete_topology(settings)
        await drop_database(settings)


@pytest.mark.timeout(RUN_S + 60)
async def test_schemathesis_finds_no_failure(own_api: str, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    LOGS.mkdir(parents=True, exist_ok=True)
    output_path = LOGS / "schemathesis.txt"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{own_api}/openapi.json",
        "--checks",
        "all",
        "--phases",
        ",".join(PHASES),
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report_path),
    ]
    with output_path.open("wb") as output:
        # In tmp_path: schemathesis keeps a cache in its working directory.
        process = await asyncio.create_subprocess_exec(
            *command, cwd=tmp_path, stdout=output, stderr=asyncio.subprocess.STDOUT
        )
        try:
            await asyncio.wait_for(process.wait(), RUN_S)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    report: dict[str, Any] = json.loads(report_path.read_text())
    told = _failures_section(output_path.read_text(errors="replace"))
    assert report["complete"], told
    assert report["failures"] == [], told
    assert report["errors"] == [], told
    assert {p: report["phases"][p]["status"] for p in PHASES} == dict.fromkeys(PHASES, "success"), (
        told
    )
    # It tested something: every operation, and more than a handful of cases.
    assert report["operations"]["tested"] == report["operations"]["selected"] >= 20
    assert report["test_cases"]["generated"] > 500, report["test_cases"]
    assert process.returncode == 0, told


def _failures_section(text: str, limit: int = 6000) -> str:
    """What schemathesis printed from its first failure or error on, for the assertion
    message (the whole output is in tests/artifacts/e2e-logs/schemathesis.txt)."""
    starts = [i for i in (text.find("= FAILURES ="), text.find("= ERRORS =")) if i >= 0]
    return text[min(starts) :][:limit] if starts else text[-limit:]
