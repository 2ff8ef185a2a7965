"""The start-up check of saga definitions, as components and commands report it.

A saga finishes under the definition it started with, or moves onto the current one
when that fits what it already did; one that cannot is named here, at start, with why
(a step it ran was removed or moved, its saga type is gone), instead of failing when
its next message arrives.
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.definition_check import DefinitionReport, check_definitions

log = structlog.get_logger(__name__)


async def report_definitions(
    sessions: async_sessionmaker[AsyncSession], application: SagaApp
) -> DefinitionReport:
    """Check every unfinished saga against the application's definitions and log the
    result: a warning per saga that cannot finish, an info line otherwise."""
    async with sessions() as session:
        report = await check_definitions(session, application.definitions)
    for finding in report.findings:
        log.warning(
            "saga cannot finish under the current definition",
            saga_id=str(finding.saga_id),
            saga_type=finding.saga_type,
            saga_status=finding.status,
            recorded_version=finding.recorded_version,
            current_version=finding.current_version,
            reason=finding.reason,
        )
    log.info(
        "saga definitions checked",
        application=application.name,
        changed=report.changed,
        cannot_finish=len(report.findings),
    )
    return report
