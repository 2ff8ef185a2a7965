"""Writes gathered during a transaction and sent as one statement at commit.

A consumer applies a whole batch of messages in one transaction; each message adds an
outbox row, history lines, a new saga state. Sent one by one, each is a round trip that
wakes PostgreSQL; gathered here, they leave together just before ``COMMIT``, as one
statement whatever the tables and the number of rows.

Nothing is lost by waiting: the rows are written by the ``before_commit`` hook of the
session itself, so every commit sends them, whoever commits; a rollback drops them with
the rest of the transaction. Reads inside the same transaction do not see them, so only
write-only rows (outbox, history, the saga state already held in memory) are deferred.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    cast,
    event,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql.selectable import TableValuedAlias

_KEY = "sagaway.deferred"
_CACHE = "sagaway.transaction_cache"
_SAVEPOINTS = "sagaway.savepoints"
_WRITTEN = "sagaway.written"
_GUARD_WON = "sagaway.guard_won"


@dataclass
class _Pending:
    """What one transaction still has to write, in the order tables were first used."""

    inserts: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)
    # Keyed by primary key value, so a row updated twice in one transaction is written
    # once, with its last values.
    updates: dict[Table, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    order: list[tuple[str, Table]] = field(default_factory=list)
    # An insert that decides whether the rest is written (see ``defer_guard``).
    guard: tuple[Table, dict[str, Any], tuple[str, ...]] | None = None


def defer_guard(
    session: AsyncSession, table: Table, row: Mapping[str, Any], *, conflict: Sequence[str]
) -> None:
    """Insert ``row`` when the transaction commits unless a row with the same ``conflict``
    columns exists, and write the transaction's other deferred rows only if it was new.

    Deciding and writing are then one statement: with an idempotency key, a request
    costs one round trip however many tables it writes. :func:`guard_won` tells the
    outcome once the rows were sent (:func:`flush_deferred`, or the commit).
    """
    pending = _pending(session)
    if pending.guard is not None:
        raise ValueError("a transaction takes one deferred guard")
    pending.guard = (table, dict(row), tuple(conflict))


def guard_won(session: AsyncSession) -> bool | None:
    """Whether the last flush's guard row was new (so the rest was written); None when
    no guard was flushed."""
    won = session.sync_session.info.get(_GUARD_WON)
    return won if isinstance(won, bool) else None


def defer_insert(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` when the session's transaction commits.

    Rows of one table are inserted in the order they were deferred, and must all set
    the same columns.
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

    Every deferred update of one table must set the same columns.
    """
    pending = _pending(session)
    inserted = pending.inserts.get(table)
    if inserted:
        # Every part of the one statement sees the same snapshot, so an update could
        # not find a row inserted beside it: the insert takes the new values instead.
        (pk,) = table.primary_key.columns
        for i, row in enumerate(inserted):
            if row.get(pk.name) == key:
                # A new dict: savepoint snapshots share the old one.
                inserted[i] = {**row, **values}
                return
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
    if not isinstance(pending, _Pending) or not (pending.order or pending.guard):
        return
    shape: list[_Part] = []
    params: dict[str, Any] = {}
    if pending.guard is not None:
        table, row, conflict = pending.guard
        shape.append(_Part("guard", table, tuple(row), conflict))
        params.update({f"g_{c}": v for c, v in row.items()})
    for n, (kind, table) in enumerate(pending.order):
        if kind == "insert":
            rows = pending.inserts[table]
            columns = _columns(table, rows)
            for c in columns:
                params[f"p{n}_{c}"] = [r[c] for r in rows]
        else:
            updates = pending.updates[table]
            rows = list(updates.values())
            columns = _columns(table, rows)
            params[f"p{n}__pk"] = list(updates)
            for c in columns:
                params[f"p{n}_{c}"] = [r[c] for r in rows]
        shape.append(_Part(kind, table, columns))
    # Every table's rows in one statement: one round trip at commit, whatever the
    # transaction wrote. Its text depends only on which tables and columns, so it is
    # built, compiled and prepared once per shape.
    key = tuple(shape)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = _combined(shape)
    won = bool(session.execute(statement, params).scalar_one())
    if pending.guard is not None:
        session.info[_GUARD_WON] = won
        if not won:
            return
    # Read by a handoff only once the transaction commits (``committed_inserts``): a
    # flush inside it may still be rolled back (with a savepoint, or the whole of it).
    written = session.info.setdefault(_WRITTEN, [])
    for kind, table in pending.order:
        if kind == "insert":
            written.append((table, pending.inserts[table]))


class _Part(NamedTuple):
    """One part of the combined statement: what it does, to which table, which columns
    (and, for the guard, the columns whose conflict makes it lose)."""

    kind: str  # "guard", "insert" or "update"
    table: Table
    columns: tuple[str, ...]
    conflict: tuple[str, ...] = ()


_STATEMENTS: dict[tuple[_Part, ...], Select[Any]] = {}


def _columns(table: Table, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    columns = tuple(rows[0])
    if any(tuple(r) != columns for r in rows):
        raise ValueError(f"deferred rows for {table.fullname} do not all set the same columns")
    return columns


def _combined(shape: Sequence[_Part]) -> Select[Any]:
    """``WITH w0 AS (INSERT ... SELECT FROM unnest(...)), w1 AS (UPDATE ... FROM
    unnest(...)) SELECT 1``: PostgreSQL runs every data-modifying CTE, and checks
    foreign keys at the end of the statement, so their order does not matter. With a
    guard first, ``g AS (INSERT ... ON CONFLICT DO NOTHING RETURNING 1)``, every other
    part writes only if ``g`` did, and the statement answers whether it did."""
    ctes = []
    guard = None
    if shape and shape[0].kind == "guard":
        first = shape[0]
        guard = (
            pg_insert(first.table)
            .values({c: bindparam(f"g_{c}", type_=first.table.c[c].type) for c in first.columns})
            .on_conflict_do_nothing(index_elements=list(first.conflict))
            .returning(literal(1).label("won"))
            .cte("g")
        )
        shape = shape[1:]
    for n, (kind, table, columns, _) in enumerate(shape):
        if kind == "insert":
            source = _unnest(table, columns, n, ordinality=True)
            # In the order deferred: an outbox's ids order a saga's messages.
            rows = select(*[source.c[c] for c in columns]).order_by(source.c.ord)
            if guard is not None:
                rows = rows.where(exists(select(guard.c.won)))
            ctes.append(insert(table).from_select(list(columns), rows).cte(f"w{n}"))
        else:
            (pk,) = table.primary_key.columns
            source = _unnest(table, ("_pk", *columns), n, ordinality=False, pk=pk)
            change = update(table).values({c: source.c[c] for c in columns})
            change = change.where(pk == source.c["_pk"])
            if guard is not None:
                change = change.where(exists(select(guard.c.won)))
            ctes.append(change.cte(f"w{n}"))
    if guard is None:
        return select(literal(1)).add_cte(*ctes)
    return select(func.count()).select_from(guard).add_cte(*ctes)


def _unnest(
    table: Table,
    columns: Sequence[str],
    n: int,
    *,
    ordinality: bool,
    pk: ColumnElement[Any] | None = None,
) -> TableValuedAlias:
    arrays = []
    for c in columns:
        kind = pk.type if c == "_pk" and pk is not None else table.c[c].type
        # One dimension: a JSON value that is itself a list stays one element.
        array = ARRAY(kind, dimensions=1)
        arrays.append(cast(bindparam(f"p{n}_{c}", type_=array), array))
    valued = func.unnest(*arrays).table_valued(
        *columns, with_ordinality="ord" if ordinality else None
    )
    return valued.render_derived(name=f"v{n}")


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


_Snapshot = tuple[_Pending | None, dict[Any, Any] | None, list[Any] | None]


def _snapshot(session: Session) -> _Snapshot:
    pending = session.info.get(_KEY)
    written = session.info.get(_WRITTEN)
    cache = session.info.get(_CACHE)
    kept = None
    if isinstance(pending, _Pending):
        kept = _Pending(
            inserts={t: list(rows) for t, rows in pending.inserts.items()},
            updates={t: dict(rows) for t, rows in pending.updates.items()},
            order=list(pending.order),
            guard=pending.guard,
        )
    cache_copy = None
    if isinstance(cache, dict):
        cache_copy = {k: dict(v) if isinstance(v, dict) else v for k, v in cache.items()}
    return kept, cache_copy, list(written) if isinstance(written, list) else None


def _on_begin(session: Session, transaction: SessionTransaction) -> None:
    # A savepoint that is rolled back must take back only what was deferred inside it.
    if transaction.nested:
        session.info.setdefault(_SAVEPOINTS, {})[id(transaction)] = _snapshot(session)


def _on_rollback(session: Session, previous: SessionTransaction) -> None:
    if previous.nested:
        kept = session.info.get(_SAVEPOINTS, {}).pop(id(previous), None)
        if kept is not None:
            pending, cache, written = kept
            for key, value in ((_KEY, pending), (_CACHE, cache), (_WRITTEN, written)):
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


def committed_inserts(session: Session) -> list[tuple[Table, list[dict[str, Any]]]]:
    """The rows the transaction's flushes inserted, per table, in order.

    Meant for an ``after_commit`` listener (``outbox.handoff``): then they are the rows
    that exist, savepoints rolled back and a guard that lost taken into account.
    """
    written = session.info.get(_WRITTEN)
    return list(written) if isinstance(written, list) else []


def _forget(session: Session) -> None:
    for key in (_KEY, _CACHE, _SAVEPOINTS, _WRITTEN, _GUARD_WON):
        session.info.pop(key, None)


# The hooks run inside SQLAlchemy's greenlet, where the synchronous session may still
# execute statements over the async driver.
event.listen(Session, "before_commit", _flush)
event.listen(Session, "after_transaction_create", _on_begin)
event.listen(Session, "after_soft_rollback", _on_rollback)
event.listen(Session, "after_transaction_end", _on_end)
