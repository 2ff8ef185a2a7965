"""The peer's modes and the DBOS settings it runs with (no DBOS import here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

Mode = Literal["transactions", "steps"]
MODES: Final[tuple[str, ...]] = get_args(Mode)
Style = Literal["async", "sync"]
STYLES: Final[tuple[str, ...]] = get_args(Style)
IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
ISOLATION_LEVELS: Final[tuple[str, ...]] = get_args(IsolationLevel)


@dataclass(frozen=True, kw_only=True)
class PeerTuning:
    """DBOS's documented settings the peer exposes; the defaults are the tuned choice.

    Attributes:
        style: ``async`` (``async def`` workflows and steps on the server's event loop) or
            ``sync`` (plain functions, which DBOS runs on its executor threads). Equal in
            throughput here; ``async`` is the FastAPI app's natural form.
        sys_db_pool_size: DBOS's ``sys_db_pool_size`` (DBOS's default: 20).
        app_pool_size: The application database pool (SQLAlchemy ``pool_size``).
        max_executor_threads: DBOS's ``max_executor_threads`` (None: DBOS's default,
            unbounded).
        isolation_level: ``isolation_level`` of each datasource transaction (DBOS's
            default: SERIALIZABLE). Every rule locks the rows it changes, so READ
            COMMITTED keeps them correct and spares retries of serialization failures.
        sys_db_pre_ping: SQLAlchemy's ``pool_pre_ping`` on the system database engine,
            through DBOS's ``db_engine_kwargs`` (DBOS's default: on, one more round trip
            per checkout; off, a connection the server dropped fails one call, which DBOS
            retries).
    """

    style: Style = "async"
    sys_db_pool_size: int = 20
    app_pool_size: int = 20
    max_executor_threads: int | None = None
    isolation_level: IsolationLevel = "READ COMMITTED"
    sys_db_pre_ping: bool = False

    def to_args(self) -> list[str]:
        """The server's command-line options for these settings."""
        args = [
            f"--style={self.style}",
            f"--sys-db-pool-size={self.sys_db_pool_size}",
            f"--app-pool-size={self.app_pool_size}",
            f"--isolation-level={self.isolation_level}",
        ]
        args.append("--sys-db-pre-ping" if self.sys_db_pre_ping else "--no-sys-db-pre-ping")
        if self.max_executor_threads is not None:
            args.append(f"--max-executor-threads={self.max_executor_threads}")
        return args
