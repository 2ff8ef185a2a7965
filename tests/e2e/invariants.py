"""The order saga's invariants as a test assertion (the checks: ``sagaway.bench.invariants``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sagaway.bench.invariants import find_problems


async def assert_invariants(
    sessions: async_sessionmaker[AsyncSession],
    *,
    stock_totals: Mapping[str, int],
    customers_used: Collection[str],
) -> None:
    """Fail with every broken invariant for the given SKUs and customers."""
    problems = await find_problems(
        sessions, stock_totals=stock_totals, customers_used=customers_used
    )
    assert not problems, "invariants broken:\n  " + "\n  ".join(problems)
