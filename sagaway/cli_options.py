"""Options every ``sagaway`` command shares: ``--app``."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from sagaway.application_loader import ApplicationNotFound, load_application
from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.dsl import DefinitionError
from sagaway.outbox.settings import Settings

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        help="The saga application to run, as module:attribute (its sagas, participants "
        "and local steps). Default: SAGAWAY_APP, else the built-in order application.",
        show_default=False,
        metavar="MODULE:ATTRIBUTE",
    ),
]


def use_app(spec: str | None) -> None:
    """Make ``--app`` the application of this process and of every process it starts
    (they read ``SAGAWAY_APP``)."""
    if spec:
        os.environ["SAGAWAY_APP"] = spec


def application_or_exit(settings: Settings) -> SagaApp:
    """The application ``settings.app`` names, or exit 2 with why it cannot be loaded."""
    try:
        return load_application(settings.app)
    except (ApplicationNotFound, DefinitionError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
