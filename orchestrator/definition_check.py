"""The start-up check: unfinished sagas that their type's current definition no longer fits.

A saga records the definition it started under (version, fingerprint, shape). Before
the components start driving sagas, this check reads every saga that is not finished
(RUNNING, COMPENSATING, or FAILED and waiting for an operator) whose recorded
fingerprint is not its type's current one, and reports those that cannot finish
(``definition_compat`` says why). The others will move onto the current definition
the next time the coordinator drives them.

It only reads, through the session it is given; what to do with the report (log it,
refuse to start, print it) is the caller's choice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.orchestrator.definition_compat import unfinishable_reason
from sagaway.orchestrator.dsl import SagaDefinition
from sagaway.orchestrator.repository import record_from_row
from sagaway.orchestrator.state import SagaStatus
from sagaway.orchestrator.tables import sagas

UNFINISHED = (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.FAILED)

# Rows read per round trip: the check streams, however many sagas wait.
_BATCH = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class DefinitionFinding:
    """An unfinished saga that cannot finish under its type's current definition.

    Attributes:
        recorded_version: the version it started under (None: before versions).
        current_version: its type's version now (None: the type is gone).
        reason: why it cannot finish.
    """

    saga_id: uuid.UUID
    saga_type: str
    status: str
    recorded_version: int | None
    current_version: int | None
    reason: str

    def __str__(self) -> str:
        recorded = "?" if self.recorded_version is None else f"v{self.recorded_version}"
        current = "gone" if self.current_version is None else f"v{self.current_version}"
        return (
            f"saga {self.saga_id} ({self.saga_type}, {self.status}, started under {recorded},"
            f" current {current}): {self.reason}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DefinitionReport:
    """What the check found.

    Attributes:
        changed: unfinished sagas whose recorded definition is not the current one.
        findings: those among them that cannot finish (the others can, and will move
            onto the current definition when next driven).
    """

    changed: int
    findings: tuple[DefinitionFinding, ...]

    @property
    def ok(self) -> bool:
        """True when every unfinished saga can finish."""
        return not self.findings

    def render(self) -> str:
        """A summary line, then one line per saga that cannot finish."""
        if not self.changed:
            return "saga definitions: every unfinished saga runs under its current definition"
        head = (
            f"saga definitions: {self.changed} unfinished saga(s) started under another"
            f" definition; {self.changed - len(self.findings)} can finish under the current"
            f" one, {len(self.findings)} cannot"
        )
        return "\n".join([head, *(f"  {f}" for f in self.findings)])

    def __str__(self) -> str:
        return self.render()


async def check_definitions(
    session: AsyncSession, definitions: Mapping[str, SagaDefinition]
) -> DefinitionReport:
    """Compare every unfinished saga's recorded definition with ``definitions``.

    Args:
        session: where to read the sagas (nothing is written).
        definitions: the current definitions, by saga type.
    """
    current = [(name, d.fingerprint) for name, d in definitions.items()]
    query = (
        select(sagas)
        .where(
            sagas.c.status.in_([s.value for s in UNFINISHED]),
            or_(
                sagas.c.definition_fingerprint.is_(None),
                tuple_(sagas.c.saga_type, sagas.c.definition_fingerprint).not_in(current),
            ),
        )
        .order_by(sagas.c.created_at, sagas.c.id)
        .execution_options(yield_per=_BATCH)
    )
    changed = 0
    findings: list[DefinitionFinding] = []
    async for row in await session.stream(query):
        record = record_from_row(row)
        definition = definitions.get(record.saga_type)
        # A saga recorded before versions: only a differing list of steps is a change.
        if (
            definition is not None
            and record.definition_fingerprint is None
            and [s.name for s in record.state.steps] == [s.name for s in definition.steps]
        ):
            continue
        changed += 1
        reason = unfinishable_reason(
            definition,
            saga_type=record.saga_type,
            state=record.state,
            recorded_shape=record.definition_shape,
        )
        if reason is not None:
            findings.append(
                DefinitionFinding(
                    saga_id=record.id,
                    saga_type=record.saga_type,
                    status=record.state.status.value,
                    recorded_version=record.definition_version,
                    current_version=None if definition is None else definition.version,
                    reason=reason,
                )
            )
    return DefinitionReport(changed=changed, findings=tuple(findings))
