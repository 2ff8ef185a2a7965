"""Which database errors are worth waiting out rather than treating as a bad message."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLSTATE classes and codes that say "the server or the link", not "your data":
# 08 connection exception, 53 insufficient resources (too many connections),
# 57P operator intervention (shutdown, cannot connect now), 40001 serialization
# failure, 40P01 deadlock.
_TRANSIENT_PREFIXES = ("08", "53", "57P", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later can succeed: a lost or refused
    connection, an exhausted pool or server, a restart, a deadlock, a serialization
    failure. Works on SQLAlchemy's wrappers and on raw driver errors alike."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout | OSError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and code.startswith(_TRANSIENT_PREFIXES):
            return True
        # asyncpg's client-side errors about a closed or broken connection.
        if type(candidate).__name__ in ("InterfaceError", "ConnectionDoesNotExistError"):
            return True
    return False
