"""Which database errors are worth waiting out rather than treating as a bad message."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


def is_transient(exc: BaseException) -> bool:
    """True for a lost or refused connection, a pool timeout, a deadlock or a
    serialization failure: retrying the same message later can succeed."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout | OSError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        # SQLSTATE 40001 serialization_failure, 40P01 deadlock_detected, 57P0x shutdown.
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(code, str) and (code in ("40001", "40P01") or code.startswith("57P"))
    return False
