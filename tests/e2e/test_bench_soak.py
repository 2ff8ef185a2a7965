"""``sagaway bench soak`` as a user runs it against the running system, shortened."""

from __future__ import annotations

import asyncio
import csv
import re
import sys
from pathlib import Path

import httpx

from tests.e2e.conftest import System
from tests.support import ADMIN_TOKEN


async def test_a_short_soak_reports_growth_per_hour_and_writes_its_samples(
    system: System, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    out = tmp_path / "samples.csv"
    # The fixture's components serve no /metrics side port: the API is found by its
    # port, the others are named by pid.
    pids = [f"{name}={p.pid}" for name, p in system.processes.items() if name != "api"]
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sagaway", "bench", "soak", "--url", system.api_url),
        *("--metrics-url", f"api={system.api_url}/metrics/"),
        *(arg for p in pids for arg in ("--pid", p)),
        *("--minutes", "0.25", "--sample-s", "3", "--capacity-s", "4", "--clients", "8"),
        *("--reject-every", "5", "--reject-kind", "credit", "--out", str(out)),
        env=system.env() | {"SAGAWAY_ADMIN_TOKEN": ADMIN_TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=100)
    report, progress = stdout.decode(), stderr.decode()

    # 1 is a verdict (something grew over 15 s); 2 would be a setup that failed.
    assert process.returncode in (0, 1), report[-3000:] + progress[-3000:]
    found = re.search(r"^soak: 0\.2 min at (\d+\.\d) sagas/s, 50% of the (\d+\.\d)", report, re.M)
    assert found, report
    assert float(found.group(1)) > 0
    assert re.search(r"timeout 0  http_error 0  behind 0 ", report), report
    assert re.search(r"^throughput: \d+\.\d sagas/s ended", report, re.M), report
    quarters = re.findall(r"^\s+\d+-\d+\s+s\s+n \d+\s+p50\s+[\d.]+\s+p99\s+[\d.]+", report, re.M)
    assert len(quarters) == 4, report
    assert "\ninvariants: hold" in report, report
    assert re.search(r"^verdict: ", report, re.M), report
    # Every component's footprint, and what PostgreSQL and RabbitMQ hold.
    for series in (
        "proc.api.rss_mb",
        "proc.relay.fds",
        "proc.orchestrator.pg_conns",
        "proc.payment.amqp_conns",
        "pg.connections.database",
        "pg.sagas.outbox.rows",
        "pg.payment.inbox.rows.payment",
        "pg.saga_status.COMPLETED",
        "pg.size_mb.orders.orders",
        f"amqp.{system.settings.namespace}.orchestrator.ready",
    ):
        assert series in report, f"{series} missing\n{report}"
    assert re.search(r"^pg\.saga_status\.COMPLETED\s+data\s.*kept by design", report, re.M)
    assert "filling: kept 3600 s" in report, report
    # A progress line per sample, and the samples on disk.
    assert len(re.findall(r"^\[\s*\d+s\] placed \d+", progress, re.M)) >= 5, progress
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"proc.api.rss_mb", "pg.saga_status.COMPLETED"} <= {r["series"] for r in rows}
    assert len({r["elapsed_s"] for r in rows}) >= 5
    completed = [float(r["value"]) for r in rows if r["series"] == "pg.saga_status.COMPLETED"]
    assert completed[-1] > completed[0]
    api_rss = [float(r["value"]) for r in rows if r["series"] == "proc.api.rss_mb"]
    assert min(api_rss) > 10
