"""The PostgreSQL backends serving one database, so its share of the server's CPU shows.

The ``postgres`` line of the cost block is every process of the server: on a shared
machine that includes other databases' work. The backends connected to the database under
test (``pg_stat_activity``) are the part that is certainly the system's own.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy.engine import make_url

from sagaway.outbox.database import raw_connect

_PIDS = """
SELECT pid FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


class DatabaseBackends:
    """Asks PostgreSQL which server processes serve the database of ``database_url``.

    One connection, opened on entry; when it cannot be opened, :meth:`pids` is None.
    """

    def __init__(self, database_url: str) -> None:
        self.database = make_url(database_url).database or ""
        self._url = database_url
        self._connection: Any = None

    async def __aenter__(self) -> DatabaseBackends:
        try:
            self._connection = await raw_connect(self._url)
        except Exception:  # not reachable from here: the line is left out
            self._connection = None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def pids(self) -> list[int] | None:
        """The pids of the database's backends, this connection's own excluded."""
        if self._connection is None:
            return None
        try:
            return [int(r["pid"]) for r in await self._connection.fetch(_PIDS)]
        except Exception:
            return None
