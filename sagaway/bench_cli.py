"""What the ``sagaway bench`` commands share, and ``sagaway bench soak``."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sagaway.outbox.settings import Settings


class RejectKindChoice(StrEnum):
    """How ``sagaway bench`` rejects every K-th order."""

    stock = "stock"
    credit = "credit"


UrlOption = Annotated[str, typer.Option(help="Base URL of the running sagaway API to drive.")]
AdminTokenOption = Annotated[
    str | None,
    typer.Option(
        help="Bearer token for /admin/*, needed to stock the bench SKUs and create the "
        "run's customer before the run.",
        envvar="SAGAWAY_ADMIN_TOKEN",
        show_default=False,
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        help="Seconds one saga may take, from POST to terminal state, before it counts "
        "as a timeout.",
        min=0.001,
    ),
]
RejectEveryOption = Annotated[
    int,
    typer.Option(
        help="Every K-th order is rejected (see --reject-kind), so its saga ends "
        "COMPENSATED (shows what the rejection path costs); 0 means never.",
        min=0,
    ),
]
RejectKindOption = Annotated[
    RejectKindChoice,
    typer.Option(
        help="stock: the K-th order asks for a SKU with no stock (out_of_stock, rejected "
        "by the first step); credit: it is placed for a customer with no credit "
        "(insufficient_funds after the reservation, which is then released).",
    ),
]
PidOption = Annotated[
    list[str] | None,
    typer.Option(
        "--pid",
        help="Also read a process's CPU from /proc, as NAME=PID; repeat it (processes "
        "of one NAME add up). PostgreSQL's and RabbitMQ's are always read.",
        show_default=False,
    ),
]


def require_bench_extra() -> None:
    """Exit with status 2, saying which install is missing, when the bench's HTTP
    clients (the ``bench`` extra, not dependencies of a deployment) are not installed."""
    missing = [name for name in ("aiohttp", "httpx") if importlib.util.find_spec(name) is None]
    if missing:
        typer.echo(
            f"bench: {', '.join(missing)} not installed: pip install 'sagaway[bench]'", err=True
        )
        raise typer.Exit(2)


def named_pids(values: Sequence[str]) -> dict[str, list[int]]:
    """``--pid`` values (``NAME=PID`` or a bare PID) by name.

    Raises:
        ValueError: A value is not ``NAME=PID``.
    """
    named: dict[str, list[int]] = {}
    for value in values:
        name, _, pid = value.rpartition("=")
        if not pid.isdigit():
            raise ValueError(f"--pid takes NAME=PID, not {value!r}")
        named.setdefault(name or f"pid {pid}", []).append(int(pid))
    return named


def soak_cmd(
    minutes: Annotated[
        float, typer.Option(help="How long the steady load runs, in minutes.", min=0.01)
    ] = 30.0,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Orders per second of the steady load; default: --load-fraction of the "
            "capacity measured first.",
            min=0.01,
            show_default=False,
        ),
    ] = None,
    load_fraction: Annotated[
        float,
        typer.Option(
            help="Share of the measured capacity the steady load runs at.", min=0.01, max=1.0
        ),
    ] = 0.5,
    capacity_s: Annotated[
        float,
        typer.Option(help="Seconds of closed-loop load that measure the capacity.", min=1.0),
    ] = 30.0,
    clients: Annotated[
        int,
        typer.Option(help="Clients of the capacity burst, each keeping one saga in flight.", min=1),
    ] = 100,
    max_in_flight: Annotated[
        int,
        typer.Option(
            help="Most sagas the steady load waits for at once; an order due while that "
            "many are in flight is not placed and counts as behind.",
            min=1,
        ),
    ] = 500,
    sample_s: Annotated[
        float,
        typer.Option(help="Seconds between two samples (and progress lines).", min=0.5),
    ] = 30.0,
    out: Annotated[
        Path | None,
        typer.Option(
            help="CSV file the samples are written to as they come (elapsed_s,series,value); "
            "default: soak-<UTC time>.csv here.",
            dir_okay=False,
            writable=True,
            show_default=False,
        ),
    ] = None,
    url: UrlOption = "http://127.0.0.1:8000",
    admin_token: AdminTokenOption = None,
    timeout_s: TimeoutOption = 120.0,
    reject_every: RejectEveryOption = 0,
    reject_kind: RejectKindOption = RejectKindChoice.stock,
    metrics_url: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics-url",
            help="Where a component serves /metrics, as NAME=URL; repeat it. Its process is "
            "the one listening on that port on this machine. Default: the API's URL and "
            "the side ports `sagaway up` uses (9401..9406), as `sagaway bench` reads them.",
            show_default=False,
        ),
    ] = None,
    pid: Annotated[
        list[str] | None,
        typer.Option(
            "--pid",
            help="Also watch a process, as NAME=PID; repeat it (processes of one NAME add up).",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="The database under test. Default: SAGAWAY_DATABASE_URL, as the components use.",
            envvar="SAGAWAY_DATABASE_URL",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a steady load for a long time and show what grows.

    Measures the capacity with a closed-loop burst (unless --rate is given), then places
    orders in an open loop at --load-fraction of it for --minutes. Every --sample-s it
    samples each component process (RSS, open fds, threads, PostgreSQL and AMQP
    connections), PostgreSQL (connections, outbox rows and unpublished ones, inbox rows
    per consumer, sagas per status, every table's size with its indexes) and RabbitMQ
    (messages ready per queue, dead-letter queues included), and prints a progress line.
    At the end: throughput, latency by quarter of the run, errors, and per series the
    first, last, min and max values and the growth per hour (least-squares slope after
    a warm-up), flagging what grows where it should not. RabbitMQ, the namespace and
    the retentions are read from SAGAWAY_* as the components see them.

    Exit code: 0 clean, 1 a series grows, a saga failed, orders fell behind or an
    invariant broke, 2 when setup is impossible. Ctrl-C ends the load early and reports
    on what ran."""
    require_bench_extra()
    from sagaway.bench.scrape import default_sources, parse_source
    from sagaway.bench.soak import SoakOptions, run_soak
    from sagaway.services.order_app import order_app
    from sagaway.wiring import build_topology

    settings = Settings()
    try:
        sources = [parse_source(text) for text in metrics_url or ()] or default_sources(url)
        pids = named_pids(pid or ())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # The soak drives the order application's API, whatever SAGAWAY_APP names.
    topology = build_topology(settings, order_app)
    queues = [q.name for q in topology.queues]
    queues += [topology.dead_letter_queue(q) for q in queues]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    raise typer.Exit(
        run_soak(
            SoakOptions(
                url=url,
                admin_token=admin_token,
                seconds=minutes * 60,
                rate=rate,
                load_fraction=load_fraction,
                capacity_s=capacity_s,
                clients=clients,
                max_in_flight=max_in_flight,
                sample_s=sample_s,
                timeout_s=timeout_s,
                reject_every=reject_every,
                reject_kind=reject_kind.value,
                database_url=database_url or settings.database_url,
                amqp_url=settings.amqp_url,
                queues=queues,
                retention_s={
                    "outbox": settings.outbox_retention_s,
                    "inbox": settings.inbox_retention_s,
                },
                components=sources,
                pids=pids,
                out=out or Path(f"soak-{stamp}.csv"),
            )
        )
    )
