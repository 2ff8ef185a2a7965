"""The ``sagaway`` command line."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated

import structlog
import typer

from sagaway.logging import configure_logging
from sagaway.settings import Settings, redact_url

app = typer.Typer(
    name="sagaway",
    help="Saga orchestrator with a transactional outbox, on PostgreSQL and RabbitMQ.\n\n"
    "Configuration comes from SAGAWAY_* environment variables (see the README).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
log = structlog.get_logger("sagaway.cli")


class Participant(StrEnum):
    """The participant services a worker can run."""

    inventory = "inventory"
    payment = "payment"
    notification = "notification"


def _settings(component: str) -> Settings:
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format, component=component)
    return settings


@app.command()
def up(
    api_port: Annotated[int, typer.Option(help="Port of the HTTP API.", min=1, max=65535)] = 8000,
    api_host: Annotated[str, typer.Option(help="Address the HTTP API listens on.")] = "127.0.0.1",
) -> None:
    """Migrate, then run every component (API, relay, orchestrator, the three workers)
    as supervised processes. Ctrl-C or SIGTERM stops them all cleanly."""
    from sagaway.migrate import migrate
    from sagaway.supervisor import components, supervise

    settings = _settings("supervisor")
    asyncio.run(migrate(settings))
    log.info(
        "starting sagaway",
        api=f"http://{api_host}:{api_port}",
        database=redact_url(settings.database_url),
        amqp=redact_url(settings.amqp_url),
    )
    raise typer.Exit(supervise(components(api_port, api_host)))


@app.command()
def api(
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Run the HTTP API (orders, sagas, admin, health). Assumes a migrated database."""
    from sagaway.runners.api import run_api

    run_api(_settings("api"), host=host, port=port)


@app.command()
def relay() -> None:
    """Run an outbox relay: publishes committed outbox rows to RabbitMQ."""
    from sagaway.runners.relay import run_relay

    asyncio.run(run_relay(_settings("relay")))


@app.command()
def orchestrator() -> None:
    """Run the saga orchestrator: consumes replies, sends the next commands, and wakes
    sagas whose deadline or retry backoff has passed."""
    from sagaway.runners.orchestrator import run_orchestrator

    asyncio.run(run_orchestrator(_settings("orchestrator")))


@app.command()
def worker(
    participant: Annotated[Participant, typer.Argument(help="Which participant to run.")],
) -> None:
    """Run one participant service: inventory, payment or notification."""
    from sagaway.runners.worker import run_worker

    asyncio.run(run_worker(_settings(participant.value), participant.value))


@app.command()
def migrate() -> None:
    """Create the database if missing and apply every migration (Alembic upgrade head)."""
    from sagaway.migrate import migrate as do_migrate

    asyncio.run(do_migrate(_settings("migrate")))


@app.command()
def seed() -> None:
    """Add demo stock (SKU-1..SKU-5, 1000 each) and customers (c-1, c-2, c-42, c-poor)
    where they are missing."""
    from sagaway.seed import seed as do_seed

    skus, customers = asyncio.run(do_seed(_settings("seed")))
    typer.echo(f"seeded {skus} SKUs and {customers} customers (existing rows left as they were)")
