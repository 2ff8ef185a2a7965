"""What PostgreSQL and RabbitMQ hold for an installation, sampled during a soak.

PostgreSQL: connections to the database under test (all, and by ``application_name``;
other databases on a shared server are left out), outbox rows (all, and those still to
publish), inbox rows per consumer, dead row versions of outboxes and inboxes (what
vacuum has yet to reclaim), sagas per status, and the size of every table with its
indexes. RabbitMQ: the messages ready in every queue of the topology and in its
dead-letter queues.
Each probe holds one connection of its own, opened on entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from sagaway.bench.growth import Kind, SeriesSpec
from sagaway.orchestrator.state import SagaStatus
from sagaway.outbox.amqp import connect, message_count
from sagaway.outbox.database import raw_connect

_MIB = 1024 * 1024
SAGA_STATUSES = tuple(s.value for s in SagaStatus)
"""Every saga status, so that a status no saga has yet counts 0 instead of being
absent."""

_TABLES = """
SELECT n.nspname AS schema, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_%'
 ORDER BY 1, 2
"""
_CONNECTIONS = """
SELECT coalesce(nullif(application_name, ''), '(unnamed)') AS application, count(*) AS n
  FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend'
   AND pid <> pg_backend_pid()
 GROUP BY 1
"""
_DEAD_ROWS = """
SELECT schemaname AS schema, relname AS name, n_dead_tup AS dead
  FROM pg_stat_user_tables WHERE relname IN ('outbox', 'inbox')
"""
_SIZES = """
SELECT n.nspname AS schema, c.relname AS name, pg_total_relation_size(c.oid) AS bytes
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_%'
"""


@dataclass(frozen=True)
class TableName:
    """A table of the database under test."""

    schema: str
    name: str

    @property
    def sql(self) -> str:
        """The quoted, qualified name, fit for a statement."""
        return f'"{self.schema}"."{self.name}"'

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


class PostgresProbe:
    """Samples what the database under test holds.

    Tables named ``outbox`` and ``inbox`` (in any schema) are counted exactly; a table
    ``sagas.sagas`` is counted per status.

    Args:
        database_url: The database under test.
    """

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._connection: Any = None
        self.outboxes: list[TableName] = []
        self.inboxes: list[TableName] = []
        self._sagas = False
        self.autovacuum: bool | None = None

    async def __aenter__(self) -> PostgresProbe:
        self._connection = await raw_connect(self._url)
        tables = [TableName(r["schema"], r["name"]) for r in await self._connection.fetch(_TABLES)]
        self.outboxes = [t for t in tables if t.name == "outbox"]
        self.inboxes = [t for t in tables if t.name == "inbox"]
        self._sagas = TableName("sagas", "sagas") in tables
        # Without autovacuum nothing reclaims what the janitor deletes: the report says so.
        self.autovacuum = await self._connection.fetchval("SHOW autovacuum") == "on"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def sample(self) -> dict[str, float]:
        """Every figure now, as ``pg.<...>`` series."""
        connection = self._connection
        values: dict[str, float] = {"pg.connections.database": 0}
        for row in await connection.fetch(_CONNECTIONS):
            values["pg.connections.database"] += row["n"]
            values[f"pg.connections.app.{row['application']}"] = row["n"]
        for table in self.outboxes:
            row = await connection.fetchrow(
                f"SELECT count(*) AS rows, count(*) FILTER (WHERE published_at IS NULL) "
                f"AS unpublished FROM {table.sql}"
            )
            values[f"pg.{table}.rows"] = row["rows"]
            values[f"pg.{table}.unpublished"] = row["unpublished"]
        for table in self.inboxes:
            for row in await connection.fetch(
                f"SELECT consumer, count(*) AS rows FROM {table.sql} GROUP BY consumer"
            ):
                values[f"pg.{table}.rows.{row['consumer']}"] = row["rows"]
        if self._sagas:
            counted = {
                row["status"]: row["n"]
                for row in await connection.fetch(
                    "SELECT status, count(*) AS n FROM sagas.sagas GROUP BY status"
                )
            }
            for status in (*SAGA_STATUSES, *sorted(set(counted) - set(SAGA_STATUSES))):
                values[f"pg.saga_status.{status}"] = counted.get(status, 0)
        for row in await connection.fetch(_DEAD_ROWS):
            values[f"pg.{row['schema']}.{row['name']}.dead_rows"] = row["dead"]
        for row in await connection.fetch(_SIZES):
            values[f"pg.size_mb.{row['schema']}.{row['name']}"] = row["bytes"] / _MIB
        return values


class BrokerProbe:
    """Samples the messages ready in RabbitMQ queues (a passive declare each).

    Args:
        amqp_url: The broker.
        queues: The queues to read; one that does not exist is left out.
    """

    def __init__(self, amqp_url: str, queues: Sequence[str]) -> None:
        self._url = amqp_url
        self._queues = tuple(queues)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> BrokerProbe:
        self._connection = await connect(self._url, name="sagaway-soak")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def sample(self) -> dict[str, float]:
        """``amqp.<queue>.ready`` of every queue that exists."""
        if self._connection is None:
            raise RuntimeError("enter the probe (async with) before sampling")
        values: dict[str, float] = {}
        for queue in self._queues:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel()
            try:
                values[f"amqp.{queue}.ready"] = await message_count(self._channel, queue)
            except Exception:
                # A missing queue closes the channel (404): the next one opens another.
                self._channel = None
        return values


def series_spec(name: str, *, outbox_retention_s: float, inbox_retention_s: float) -> SeriesSpec:
    """What a series of this module (or of :mod:`sagaway.bench.footprint`) is expected
    to do under a steady load.

    Outbox and inbox rows and their tables' size are kept for their retention; sagas
    that ended well, and every other table, are kept by design; the rest (processes,
    connections, unpublished rows, sagas in flight or FAILED, queue depths) should
    level off.
    """
    retention = {"outbox": outbox_retention_s, "inbox": inbox_retention_s}
    parts = name.split(".")
    if name.startswith("pg.size_mb."):
        table = parts[-1]
        if table in retention:
            return SeriesSpec(kind=Kind.retained, retention_s=retention[table])
        return SeriesSpec(kind=Kind.data)
    if name.startswith("pg.") and len(parts) >= 4 and parts[2] in retention and parts[3] == "rows":
        return SeriesSpec(kind=Kind.retained, retention_s=retention[parts[2]])
    if name in ("pg.saga_status.COMPLETED", "pg.saga_status.COMPENSATED"):
        return SeriesSpec(kind=Kind.data)
    return SeriesSpec(kind=Kind.bounded)
