"""The ``sagaway`` command line."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from sagaway.bench_cli import (
    AdminTokenOption,
    PidOption,
    RejectEveryOption,
    RejectKindChoice,
    RejectKindOption,
    TimeoutOption,
    UrlOption,
    named_pids,
    require_bench_extra,
    soak_cmd,
)
from sagaway.cli_options import AppOption, application_or_exit, use_app
from sagaway.logging import configure_logging
from sagaway.operator_cli import dead_letters_cmd, outbox_app, sagas_app
from sagaway.outbox.settings import Settings, redact_url
from sagaway.supervisor import DEFAULT_METRICS_PORT_BASE

app = typer.Typer(
    name="sagaway",
    help="Saga orchestrator with a transactional outbox, on PostgreSQL and RabbitMQ.\n\n"
    "Configuration comes from SAGAWAY_* environment variables (see the README).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
log = structlog.get_logger("sagaway.cli")

app.add_typer(sagas_app, name="sagas")
app.add_typer(outbox_app, name="outbox")
app.command("dead-letters")(dead_letters_cmd)


def run_component(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived component on uvloop (installed with uvicorn[standard], which the
    API already runs on): its event loop costs a component less CPU per message than
    asyncio's own."""
    try:
        import uvloop
    except ImportError:  # a platform uvloop does not support
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _settings(component: str, app_spec: str | None = None) -> Settings:
    """Settings with ``--app`` applied, logging configured, and the application checked
    (a command that cannot load it exits 2 saying why, before doing anything)."""
    use_app(app_spec)
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, component=component)
    application_or_exit(settings)
    return settings


@app.command()
def up(
    api_port: Annotated[int, typer.Option(help="Port of the HTTP API.", min=1, max=65535)] = 8000,
    api_host: Annotated[str, typer.Option(help="Address the HTTP API listens on.")] = "127.0.0.1",
    metrics_port_base: Annotated[
        int,
        typer.Option(
            help="Relay, orchestrator and workers serve Prometheus /metrics on this port + 1..5 "
            "with --split, the shared backend on + 6 (the API serves /metrics on its own "
            "port); 0 turns them off.",
            min=0,
            max=65530,
        ),
    ] = DEFAULT_METRICS_PORT_BASE,
    split: Annotated[
        bool,
        typer.Option(
            "--split/--shared",
            help="--shared (default): two processes, the API and `sagaway backend` (relay, "
            "orchestrator and workers on one event loop), which measured cheaper on a small "
            "machine; --split: one process per component.",
        ),
    ] = False,
    app_spec: AppOption = None,
) -> None:
    """Migrate, then run every component (API, relay, orchestrator, one worker per
    participant of the application) as supervised processes. Ctrl-C or SIGTERM stops
    them all cleanly."""
    from sagaway.migrate import migrate
    from sagaway.supervisor import components, supervise

    settings = _settings("supervisor", app_spec)
    asyncio.run(migrate(settings))
    log.info(
        "starting sagaway",
        api=f"http://{api_host}:{api_port}",
        database=redact_url(settings.database_url),
        amqp=redact_url(settings.amqp_url),
    )
    participants = application_or_exit(settings).participant_names
    raise typer.Exit(
        supervise(
            components(
                api_port, api_host, metrics_port_base, split=split, participants=participants
            )
        )
    )


@app.command()
def api(
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    app_spec: AppOption = None,
) -> None:
    """Run the HTTP API (orders, sagas, admin, health). Assumes a migrated database."""
    from sagaway.runners.api import run_api
    from sagaway.tracing import tracing

    settings = _settings("api", app_spec)
    with tracing("api"):
        run_api(settings, host=host, port=port)


@app.command()
def relay(app_spec: AppOption = None) -> None:
    """Run an outbox relay: publishes committed outbox rows to RabbitMQ."""
    from sagaway.runners.relay import run_relay
    from sagaway.tracing import tracing

    settings = _settings("relay", app_spec)
    with tracing("relay"):
        run_component(run_relay(settings))


@app.command()
def orchestrator(app_spec: AppOption = None) -> None:
    """Run the saga orchestrator: consumes replies, sends the next commands, and wakes
    sagas whose deadline or retry backoff has passed."""
    from sagaway.runners.orchestrator import run_orchestrator
    from sagaway.tracing import tracing

    settings = _settings("orchestrator", app_spec)
    with tracing("orchestrator"):
        run_component(run_orchestrator(settings))


@app.command()
def backend(app_spec: AppOption = None) -> None:
    """Run the relay, the orchestrator and every worker together in one process (what
    `sagaway up` does by default; each can still run alone as N instances)."""
    from sagaway.runners.backend import run_backend
    from sagaway.tracing import tracing

    settings = _settings("backend", app_spec)
    with tracing("backend"):
        run_component(run_backend(settings))


@app.command()
def worker(
    participant: Annotated[
        str,
        typer.Argument(
            help="Which participant of the application to run (the order application has "
            "inventory, payment and notification).",
            show_default=False,
        ),
    ],
    app_spec: AppOption = None,
) -> None:
    """Run one participant of the application (for the order application: inventory,
    payment or notification)."""
    from sagaway.runners.worker import run_worker
    from sagaway.tracing import tracing

    settings = _settings(participant, app_spec)
    try:
        application_or_exit(settings).participant(participant)
    except KeyError as exc:
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(2) from exc
    with tracing(participant):
        run_component(run_worker(settings, participant))


@app.command()
def migrate(app_spec: AppOption = None) -> None:
    """Create the database if missing, apply sagaway's migrations and then the
    application's own (Alembic upgrade head of each), and create the outbox and inbox
    of every participant of the application."""
    from sagaway.migrate import migrate as do_migrate

    asyncio.run(do_migrate(_settings("migrate", app_spec)))


@app.command()
def seed(app_spec: AppOption = None) -> None:
    """Add the application's demo data where it is missing (the order application: stock
    SKU-1..SKU-5, 1000 each, and customers c-1, c-2, c-42, c-poor)."""
    from sagaway.seed import seed as do_seed

    settings = _settings("seed", app_spec)
    said = asyncio.run(do_seed(settings, application_or_exit(settings)))
    typer.echo(f"{said} (existing rows left as they were)")


@app.command()
def asyncapi(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the document to this file instead of printing it.",
            dir_okay=False,
            writable=True,
        ),
    ] = None,
    app_spec: AppOption = None,
) -> None:
    """Print the AsyncAPI 3.0 document of the application's messages (commands, replies,
    envelope, exchanges, queues and routing keys), generated from the code for this
    installation's SAGAWAY_NAMESPACE and SAGAWAY_QUEUE_TYPE. The API serves the same at
    /asyncapi.json."""
    from sagaway.services.api.asyncapi import render_asyncapi

    # No logging set up: stdout carries the document alone, fit for a pipe.
    use_app(app_spec)
    settings = Settings()
    document = render_asyncapi(settings, application_or_exit(settings))
    if output is None:
        typer.echo(document, nl=False)
    else:
        output.write_text(document, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


class Peer(StrEnum):
    """Systems ``sagaway bench --peer`` can compare with."""

    dbos = "dbos"


class PeerModeChoice(StrEnum):
    """How the DBOS peer runs its steps."""

    transactions = "transactions"
    steps = "steps"


bench_app = typer.Typer(no_args_is_help=False)
app.add_typer(bench_app, name="bench")


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    url: UrlOption = "http://127.0.0.1:8000",
    sagas: Annotated[
        int, typer.Option(help="Number of orders to place (each starts one saga).", min=1)
    ] = 1000,
    concurrency: Annotated[
        int,
        typer.Option(
            help="Number of concurrent workers; each keeps one saga in flight at a time "
            "(also the size of the HTTP connection pool).",
            min=1,
        ),
    ] = 50,
    admin_token: AdminTokenOption = None,
    timeout_s: TimeoutOption = 120.0,
    reject_every: RejectEveryOption = 0,
    reject_kind: RejectKindOption = RejectKindChoice.stock,
    poll: Annotated[
        bool,
        typer.Option(
            "--poll",
            help="Poll GET /sagas/{id} every --poll-interval-s instead of waiting with "
            "?wait_s=N (for servers without wait_s).",
        ),
    ] = False,
    poll_interval_s: Annotated[
        float,
        typer.Option(
            help="With --poll: pause between two GET /sagas/{id} of one saga; latencies are "
            "measured at the first poll that sees the terminal state.",
            min=0.001,
        ),
    ] = 0.02,
    metrics_url: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics-url",
            help="A process's Prometheus /metrics, as NAME=URL (or a bare URL); repeat it. "
            "Processes of one NAME add up. Default: the API's /metrics and "
            "http://<api host>:9401..9405/metrics (relay, orchestrator, inventory, "
            "payment, notification), as `sagaway up` serves them.",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="The database under test: the CPU of its PostgreSQL backends is shown apart "
            "from the whole server's. Default: SAGAWAY_DATABASE_URL, as the components use.",
            envvar="SAGAWAY_DATABASE_URL",
            show_default=False,
        ),
    ] = None,
    pid: PidOption = None,
    peer: Annotated[
        Peer | None,
        typer.Option(
            help="Right after sagaway's run, run the same workload on a peer started for "
            "the purpose in databases of its own (needs the bench extra), print its report "
            "and ratio_to_dbos (sagaway's sagas/s over the peer's).",
            show_default=False,
        ),
    ] = None,
    peer_mode: Annotated[
        PeerModeChoice,
        typer.Option(
            help="transactions: every DBOS step a datasource transaction, its effect and "
            "recorded output committed together (exactly once, sagaway's guarantee); "
            "steps: plain @DBOS.step functions (at least once).",
        ),
    ] = PeerModeChoice.transactions,
) -> None:
    """Benchmark a running system over HTTP: place SAGAS orders with CONCURRENCY
    workers, wait for each saga's terminal state (GET /sagas/{id}?wait_s=N), then print
    throughput (sagas/s), p50/p95/p99 latency from POST to terminal state, the outcome
    mix, and what a saga cost: CPU ms of every component, of PostgreSQL and of
    RabbitMQ, PostgreSQL statements, transactions and round trips, AMQP publishes and
    deliveries, all per saga (counters of /metrics and /proc, before and after the run).

    Exit code: 0 clean, 1 on any timeout or HTTP error, 2 when setup is impossible.

    `sagaway bench relay` measures the outbox relay alone, `sagaway bench soak` runs a
    steady load for a long time and shows what grows (see their --help)."""
    if ctx.invoked_subcommand is not None:
        return
    require_bench_extra()
    from sagaway.bench import BenchOptions, WorkloadOptions, parse_source, run_bench

    try:
        sources = [parse_source(text) for text in metrics_url or ()]
        pids = named_pids(pid or ())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    raise typer.Exit(
        run_bench(
            BenchOptions(
                url=url,
                workload=WorkloadOptions(
                    sagas=sagas,
                    concurrency=concurrency,
                    admin_token=admin_token,
                    timeout_s=timeout_s,
                    reject_every=reject_every,
                    reject_kind=reject_kind.value,
                    long_poll=not poll,
                    poll_interval_s=poll_interval_s,
                ),
                metrics=sources,
                pids=pids,
                database_url=database_url or Settings().database_url,
                peer=peer_mode.value if peer is not None else None,
            )
        )
    )


bench_app.command("soak")(soak_cmd)


@bench_app.command("relay")
def bench_relay(
    messages: Annotated[
        int, typer.Option(help="Rows prefilled into the outbox for each drain phase.", min=100)
    ] = 100_000,
    latency_rate: Annotated[
        float, typer.Option(help="Single-row inserts per second in the latency phase.", min=1)
    ] = 200.0,
    latency_seconds: Annotated[
        float, typer.Option(help="How long the latency phase inserts.", min=1)
    ] = 10.0,
    steady_rate: Annotated[
        float,
        typer.Option(
            help="Inserts per second while two relays drain (the 'rows arriving' phase).", min=1
        ),
    ] = 2000.0,
) -> None:
    """Benchmark the outbox relay against RabbitMQ's own limit, measured in the same run.

    Raw publishers with confirms and no database (1 and 2 processes; aio-pika's own
    publish with a window of 500, and sagaway's batched publisher fed from memory) vs
    1 and 2 relay processes draining a prefilled outbox; then two relays while rows
    keep arriving, and commit-to-publish latency under a steady insert load. `ratio:`
    is two relays over two aio-pika publishers; the ratio to the batched publisher
    (the relay's broker work without a database) is printed too. Migrates the
    configured database if needed; uses a schema and queue of its own, removed
    afterwards. Progress goes to stderr, figures to stdout."""
    require_bench_extra()
    from sagaway.bench.relay import RelayBenchOptions, run_relay_bench

    settings = _settings("bench")
    raise typer.Exit(
        run_relay_bench(
            settings,
            RelayBenchOptions(
                messages=messages,
                latency_rate=latency_rate,
                latency_seconds=latency_seconds,
                steady_rate=steady_rate,
            ),
        )
    )
