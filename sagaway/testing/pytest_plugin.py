"""pytest fixtures of sagaway's test kit: ``saga_stack``, the real stack of one
application, for integration tests of a team's saga.

Loaded by pytest on its own once ``sagaway`` is installed (an entry point); a team
overrides ``sagaway_app_spec`` in its ``conftest.py`` to name its application::

    @pytest.fixture
    def sagaway_app_spec() -> str:
        return "trips.app:app"

``saga_stack`` is an async fixture: it needs pytest-asyncio (``sagaway[testing]``), and
a test that uses it must run in the same event loop as the fixture (the default: both
function-scoped; or both session-scoped, as sagaway's own suite runs). Nothing is
imported from the stack until a test asks for it, so the plugin costs nothing to a
test run that does not use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sagaway.testing.stack import SagaStack


@pytest.fixture
def sagaway_app_spec() -> str:
    """The application ``saga_stack`` runs, as ``module:attribute``: ``SAGAWAY_APP``, or
    the built-in order application. Override it in your ``conftest.py``."""
    from sagaway.outbox.settings import Settings

    return Settings().app


@pytest.fixture
def sagaway_stack_settings() -> dict[str, Any]:
    """Settings ``saga_stack`` changes (``{"step_timeout_s": 2.0}``); none by default.
    Override it in your ``conftest.py`` or in a test module."""
    return {}


async def _saga_stack(
    sagaway_app_spec: str, sagaway_stack_settings: dict[str, Any]
) -> AsyncIterator[SagaStack]:
    """The real stack (PostgreSQL, RabbitMQ, relay, orchestrator, workers) of the
    application ``sagaway_app_spec`` names, in a database and a broker namespace of its
    own that are removed after the test."""
    from sagaway.testing.stack import running_stack

    async with running_stack(sagaway_app_spec, **sagaway_stack_settings) as stack:
        yield stack


def _needs_pytest_asyncio() -> None:
    pytest.fail("saga_stack needs pytest-asyncio: pip install 'sagaway[testing]'")


saga_stack: Any
try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on what is installed
    saga_stack = pytest.fixture(_needs_pytest_asyncio, name="saga_stack")
else:
    # pytest_asyncio's own decorator, so that the fixture works in its strict mode too.
    saga_stack = pytest_asyncio.fixture(_saga_stack, name="saga_stack")
