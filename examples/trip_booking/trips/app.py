"""The trip application: what ``sagaway --app trips.app:app`` runs.

Run from the directory that holds ``trips/``, ``services/`` and ``migrations/``
(sagaway puts the working directory on the import path, as ``python -m`` does).
"""

from __future__ import annotations

import sagaway

from services.flights import flights
from services.hotels import hotels
from services.payments import payments
from trips.api import router
from trips.local_steps import LOCAL_STEPS
from trips.saga import TRIP_BOOKING

app = sagaway.SagaApp(
    "trips",
    sagas=[TRIP_BOOKING],
    participants=[flights, hotels, payments],
    local_steps=LOCAL_STEPS,
    # Alembic revisions in migrations/versions/, with their own version table
    # (alembic_version_trips), applied by `sagaway migrate` after sagaway's.
    migrations="migrations",
    routers=[router],
)
"""Trips: reserve a flight, reserve a hotel, charge the card (pivot), confirm."""
