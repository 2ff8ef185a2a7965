"""Finds the saga application a command runs: ``--app module:attribute`` or
``SAGAWAY_APP``, the built-in order application by default."""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache

from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.dsl import DefinitionError


class ApplicationNotFound(Exception):
    """``--app`` names nothing importable, or something that is not a SagaApp."""


@cache
def load_application(spec: str) -> SagaApp:
    """Import ``module:attribute`` and return the :class:`SagaApp` it names.

    The working directory is put first on the import path, as ``python -m`` does, so
    that ``sagaway --app trips.app:app`` finds a team's package where it is run from;
    sagaway's own modules live under ``sagaway.`` and cannot be shadowed by it.

    Raises:
        ApplicationNotFound: with what was looked for and why it failed.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ApplicationNotFound(f"--app {spec!r}: expected module:attribute")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ApplicationNotFound(f"--app {spec!r}: no module named {exc.name!r}") from exc
    except DefinitionError as exc:
        raise ApplicationNotFound(f"--app {spec!r}: {exc}") from exc
    try:
        application = getattr(module, attribute)
    except AttributeError:
        raise ApplicationNotFound(
            f"--app {spec!r}: module {module_name} has no attribute {attribute!r}"
        ) from None
    if not isinstance(application, SagaApp):
        raise ApplicationNotFound(
            f"--app {spec!r} is a {type(application).__name__}, not a sagaway.SagaApp"
        )
    return application
