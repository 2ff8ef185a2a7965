"""``sagaway bench`` as a user runs it against the running system: report and cost block."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import httpx
import pytest

from tests.e2e.conftest import System
from tests.support import ADMIN_TOKEN

NUMBER = r"\s+(\d+\.\d\d)"


async def _bench(system: System, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sagaway", "bench", "--url", system.api_url),
        *("--metrics-url", f"api={system.api_url}/metrics/", *args),
        *("--database-url", system.settings.database_url),
        env=os.environ | {"SAGAWAY_ADMIN_TOKEN": ADMIN_TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=100)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("mode", "kind", "waiting"),
    [([], "credit", "long-poll wait_s"), (["--poll"], "stock", "polled every 20 ms")],
)
async def test_the_bench_reports_outcomes_latency_and_the_cost_of_a_saga(
    system: System, api: httpx.AsyncClient, mode: list[str], kind: str, waiting: str
) -> None:
    code, report, err = await _bench(
        system,
        *("--sagas", "20", "--concurrency", "4", "--reject-every", "5", "--reject-kind", kind),
        *mode,
    )

    assert code == 0, report[-2000:] + err[-2000:]
    assert "outcomes: COMPLETED 16 (80.0%)  COMPENSATED 4 (20.0%)  FAILED 0" in report, report
    # Checked in the system's own database, over the run's own SKUs and customers.
    assert "\ninvariants: hold" in report, report
    assert re.search(r"^throughput: \d+\.\d sagas/s", report, re.MULTILINE), report
    assert re.search(rf"^polls: \d+ \(\d+\.\d per finished saga, {waiting}\)$", report, re.M)
    # The API serves its counters: a full line of figures; the relay and the rest were
    # not named with --metrics-url, so they are not in the block.
    api_line = re.search(rf"^api{NUMBER * 7}$", report, re.MULTILINE)
    assert api_line, report
    statements, round_trips = float(api_line.group(2)), float(api_line.group(5))
    # At least the order's own statement (one, in autocommit: no transaction around it).
    assert statements >= 1 and round_trips >= statements
    assert re.search(rf"^postgres{NUMBER}(\s+-){{6}}$", report, re.MULTILINE), report
    assert re.search(rf"^total{NUMBER * 7}$", report, re.MULTILINE), report
    assert re.search(r"^AMQP per saga: \d+\.\d\d publishes, \d+\.\d\d deliveries$", report, re.M)
    assert re.search(r"^bench client CPU: \d+\.\d\d ms per saga", report, re.MULTILINE), report
    assert "relay" not in report
