"""The peer's two databases, named after sagaway's URL, created fresh and dropped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

DEFAULT_PREFIX = "sagaway_peer_dbos"


@dataclass(frozen=True, slots=True)
class PeerDatabases:
    """The application and system database of one peer run, as driverless URLs.

    Attributes:
        app_url: The application database (orders, stock, ...; DBOS's datasource table).
        system_url: DBOS's system database.
    """

    app_url: str
    system_url: str

    @classmethod
    def derive(cls, database_url: str, *, prefix: str = DEFAULT_PREFIX) -> PeerDatabases:
        """``<prefix>_app`` and ``<prefix>_sys`` on the server of ``database_url``."""
        base = _libpq(make_url(database_url))
        return cls(
            app_url=_render(base.set(database=f"{prefix}_app")),
            system_url=_render(base.set(database=f"{prefix}_sys")),
        )

    @property
    def names(self) -> tuple[str, str]:
        """The two database names."""
        return _name(self.app_url), _name(self.system_url)


def recreate(databases: PeerDatabases) -> None:
    """Drop both databases if they exist, then create the application database.

    DBOS creates its system database itself when it launches.
    """
    drop(databases)
    with _admin(databases) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(databases.names[0])))


def drop(databases: PeerDatabases) -> None:
    """Drop both databases, closing whatever is still connected to them."""
    with _admin(databases) as conn:
        for name in databases.names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A psycopg connection to one of the peer's databases (autocommit)."""
    return psycopg.connect(url, autocommit=True)


def _admin(databases: PeerDatabases) -> psycopg.Connection[tuple[Any, ...]]:
    return connect(_render(make_url(databases.app_url).set(database="postgres")))


def _libpq(url: URL) -> URL:
    # asyncpg spells TLS ``ssl=``; libpq (psycopg, DBOS) spells it ``sslmode=``.
    query = dict(url.query)
    if "ssl" in query and "sslmode" not in query:
        query["sslmode"] = query.pop("ssl")
    return url.set(drivername="postgresql", query=query)


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _name(url: str) -> str:
    name = make_url(url).database
    if not name:
        raise ValueError("a peer database URL names no database")
    return name
