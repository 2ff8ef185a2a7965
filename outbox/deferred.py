"""Writes gathered during a transaction and sent as one statement per table at commit.

A consumer applies a whole batch of messages in one transaction; each message adds an
outbox row, history lines, a new saga state. Sent one by one, each is a round trip that
wakes PostgreSQL; gathered here, they leave as one multi-row ``INSERT`` (or one
pipelined ``UPDATE``) per table just before ``COMMIT``.

Nothing is lost by waiting: the rows are written by the ``before_commit`` hook of the
session itself, so every commit sends them, whoever commits; a rollback drops them with
the rest of the transaction. Reads inside the same transaction do not see them, so only
write-only rows (outbox, history, the saga state already held in memory) are deferred.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, event, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

_KEY = "sagaway.deferred"
_CACHE = "sagaway.transaction_cache"
_SAVEPOINTS = "sagaway.savepoints"


@dataclass
class _Pending:
    """What one transaction still has to write, in the order tables were first used."""

    inserts: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)
    # Keyed by primary key value, so a row updated twice in one transaction is written
    # once, with its last values.
    updates: dict[Table, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    order: list[tuple[str, Table]] = field(default_factory=list)


def defer_insert(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` when the session's transaction commits.

    Rows of one table are inserted in the order they were deferred, in one statement.
    """
    if not rows:
        return
    pending = _pending(session)
    bucket = pending.inserts.get(table)
    if bucket is None:
        bucket = pending.inserts[table] = []
        pending.order.append(("insert", table))
    bucket.extend(dict(r) for r in rows)


def defer_update(session: AsyncSession, table: Table, key: Any, values: Mapping[str, Any]) -> None:
    """Set ``values`` on the row of ``table`` whose single-column primary key is ``key``,
    when the session's transaction commits; a later call for the same row replaces it.

    Every deferred update of one table must set the same columns (they go out as one
    pipelined statement).
    """
    pending = _pending(session)
    bucket = pending.updates.get(table)
    if bucket is None:
        bucket = pending.updates[table] = {}
        pending.order.append(("update", table))
    bucket[key] = dict(values)


async def flush_deferred(session: AsyncSession) -> None:
    """Write what is pending now (the commit hook does it anyway)."""
    await session.run_sync(_flush)


def _pending(session: AsyncSession) -> _Pending:
    info = session.sync_session.info
    pending = info.get(_KEY)
    if pending is None:
        pending = info[_KEY] = _Pending()
    assert isinstance(pending, _Pending)
    return pending


def _flush(session: Session) -> None:
    pending = session.info.pop(_KEY, None)
    if not isinstance(pending, _Pending):
        return
    for kind, table in pending.order:
        if kind == "insert":
            session.execute(insert(table), pending.inserts[table])
            continue
        rows = pending.updates[table]
        (pk,) = table.primary_key.columns
        columns = next(iter(rows.values())).keys()
        statement = (
            update(table)
            .where(pk == bindparam("_pk"))
            .values({c: bindparam(f"_v_{c}") for c in columns})
        )
        # One executemany: asyncpg pipelines it as one round trip.
        session.execute(
            statement,
            [{"_pk": k, **{f"_v_{c}": v[c] for c in columns}} for k, v in rows.items()],
        )


def transaction_cache(session: AsyncSession) -> dict[Any, Any]:
    """A dict that lives as long as the session's current transaction.

    For state a transaction holds in memory and must not outlive it: rows it locked
    and changed (whose new values are deferred, so a query would not see them).
    """
    info = session.sync_session.info
    cache = info.get(_CACHE)
    if cache is None:
        cache = info[_CACHE] = {}
    assert isinstance(cache, dict)
    return cache


def _snapshot(session: Session) -> tuple[_Pending | None, dict[Any, Any] | None]:
    pending = session.info.get(_KEY)
    cache = session.info.get(_CACHE)
    kept = None
    if isinstance(pending, _Pending):
        kept = _Pending(
            inserts={t: list(rows) for t, rows in pending.inserts.items()},
            updates={t: dict(rows) for t, rows in pending.updates.items()},
            order=list(pending.order),
        )
    cache_copy = None
    if isinstance(cache, dict):
        cache_copy = {k: dict(v) if isinstance(v, dict) else v for k, v in cache.items()}
    return kept, cache_copy


def _on_begin(session: Session, transaction: SessionTransaction) -> None:
    # A savepoint that is rolled back must take back only what was deferred inside it.
    if transaction.nested:
        session.info.setdefault(_SAVEPOINTS, {})[id(transaction)] = _snapshot(session)


def _on_rollback(session: Session, previous: SessionTransaction) -> None:
    if previous.nested:
        kept = session.info.get(_SAVEPOINTS, {}).pop(id(previous), None)
        if kept is not None:
            pending, cache = kept
            for key, value in ((_KEY, pending), (_CACHE, cache)):
                if value is None:
                    session.info.pop(key, None)
                else:
                    session.info[key] = value
        return
    _forget(session)


def _on_end(session: Session, transaction: SessionTransaction) -> None:
    # A released savepoint's snapshot is simply forgotten with the transaction's (its
    # end comes before the rollback hook, so it cannot be dropped here).
    if transaction.parent is None and not transaction.nested:
        # Committed (already flushed), rolled back or closed: nothing may outlive it.
        _forget(session)


def _forget(session: Session) -> None:
    for key in (_KEY, _CACHE, _SAVEPOINTS):
        session.info.pop(key, None)


# The hooks run inside SQLAlchemy's greenlet, where the synchronous session may still
# execute statements over the async driver.
event.listen(Session, "before_commit", _flush)
event.listen(Session, "after_transaction_create", _on_begin)
event.listen(Session, "after_soft_rollback", _on_rollback)
event.listen(Session, "after_transaction_end", _on_end)
