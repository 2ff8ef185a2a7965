"""The test kit's settings for the trip application.

``saga_stack`` comes from sagaway's pytest plugin (loaded on its own once sagaway is
installed); it runs the application this fixture names.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def sagaway_app_spec() -> str:
    """The application ``saga_stack`` runs: the one ``sagaway --app`` runs."""
    return "trips.app:app"


@pytest.fixture
def sagaway_stack_settings() -> dict[str, Any]:
    """Short retry delays, so that a retried step does not slow the tests down."""
    return {"step_backoff_s": 0.2, "step_timeout_s": 10.0}
