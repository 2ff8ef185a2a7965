"""``sagaway seed``: the application's demo data, added only where missing."""

from __future__ import annotations

from sagaway.orchestrator.application import SagaApp
from sagaway.outbox.database import create_engine
from sagaway.outbox.settings import Settings


async def seed(settings: Settings, application: SagaApp) -> str:
    """Run the application's seeder in one transaction; says what it added."""
    if application.seed is None:
        return f"application {application.name} has no demo data to seed"
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await application.seed(conn)
    finally:
        await engine.dispose()
