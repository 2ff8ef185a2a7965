"""``start_saga``: a saga begins inside the caller's own transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from functools import cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.application_loader import load_application
from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.coordinator import SagaCoordinator
from sagaway.outbox.settings import Settings

# Built once per (application, settings): a coordinator compiles every definition's
# state machine, which a request that starts a saga should not pay for.
_COORDINATORS: dict[tuple[int, int], tuple[SagaApp, Settings, SagaCoordinator]] = {}


@cache
def _environment() -> Settings:
    """The ``SAGAWAY_*`` settings, read once per process."""
    return Settings()


def _coordinator(app: SagaApp, settings: Settings) -> SagaCoordinator:
    key = (id(app), id(settings))
    cached = _COORDINATORS.get(key)
    if cached is None or cached[0] is not app or cached[1] is not settings:
        cached = _COORDINATORS[key] = (app, settings, app.saga_coordinator(settings))
    return cached[2]


async def start_saga(
    session: AsyncSession,
    saga_type: str,
    data: Mapping[str, Any],
    *,
    app: SagaApp | None = None,
    saga_id: uuid.UUID | None = None,
    correlation_id: uuid.UUID | None = None,
    settings: Settings | None = None,
) -> uuid.UUID:
    """Start a saga of ``app`` in the transaction ``session`` is in, and return its id.

    The saga row, its history and its first command are written in that transaction:
    they commit with the caller's own rows (an order, a booking) or not at all. Nothing
    is sent before the commit; the relay publishes the command once it is committed.

    Args:
        session: the caller's session, inside a transaction it commits.
        saga_type: the saga to start (``trip_booking``).
        data: the saga's data, JSON values only; steps build their commands from it and
            each step's output is merged into it.
        app: the application that defines ``saga_type`` (default: the one
            ``SAGAWAY_APP`` names, as for every ``sagaway`` command).
        saga_id: the saga's id (default: a new one).
        correlation_id: ties every message of the business transaction together
            (default: the saga id).
        settings: where retry defaults and broker names come from (default: the
            environment, ``SAGAWAY_*``).

    Raises:
        ValueError: an unknown saga type, or data that is not JSON.
    """
    settings = settings or _environment()
    if app is None:
        app = load_application(settings.app)
    if saga_type not in app.definitions:
        raise ValueError(
            f"application {app.name} has no saga {saga_type!r} "
            f"(it has {', '.join(app.definitions)})"
        )
    try:
        plain = json.loads(json.dumps(dict(data)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"saga data must be JSON values: {exc}") from exc
    saga_id = saga_id or uuid.uuid4()
    await _coordinator(app, settings).start(
        session,
        saga_type=saga_type,
        saga_id=saga_id,
        correlation_id=correlation_id or saga_id,
        data=plain,
    )
    return saga_id
