"""``sagaway bench relay`` as a user runs it: every phase finishes and prints its figures."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import asyncpg
from sqlalchemy.engine import make_url

from sagaway.outbox.settings import Settings

FIGURE = r"\s+(\d+) msgs/s"


async def test_the_relay_bench_prints_every_figure_and_cleans_up(migrated: Settings) -> None:
    env = os.environ | {
        "SAGAWAY_DATABASE_URL": migrated.database_url,
        "SAGAWAY_AMQP_URL": migrated.amqp_url,
        "SAGAWAY_NAMESPACE": migrated.namespace,
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sagaway", "bench", "relay", "--messages", "400"),
        *("--latency-seconds", "1", "--latency-rate", "50", "--steady-rate", "100"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode == 0, err.decode()[-2000:]
    report = out.decode()

    for line in (
        "raw, 1 process, aio-pika publish:",
        "raw, 1 process, batched publisher:",
        "relay, 1 process:",
        "raw, 2 processes, aio-pika publish:",
        "raw, 2 processes, batched publisher:",
        "relay, 2 processes:",
        "relay, 2 processes, rows arriving:",
    ):
        match = re.search(re.escape(line) + FIGURE, report)
        assert match, f"{line!r} missing from:\n{report}"
        assert int(match.group(1)) > 0
    assert re.search(r"^ratio: \d+\.\d\d$", report, re.MULTILINE), report
    assert re.search(
        r"^ratio to the batched publisher without a database: \d+\.\d\d$", report, re.MULTILINE
    ), report
    latency = re.search(r"p50 ([\d.]+) ms\s+p99 ([\d.]+) ms", report)
    assert latency, report
    assert 0 < float(latency.group(1)) <= float(latency.group(2))
    assert "bench_" in err.decode()  # progress goes to stderr

    # Nothing of the bench is left behind: its schema is dropped.
    url = make_url(migrated.database_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'bench\\_%'"
        )
    finally:
        await conn.close()
    assert left == 0
