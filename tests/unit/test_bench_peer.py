"""The DBOS peer's pure parts: its database names and the settings handed to its server."""

from __future__ import annotations

import pytest

pytest.importorskip("dbos", reason="DBOS Transact is not installed (the bench extra)")

from sagaway.bench_peer.databases import PeerDatabases
from sagaway.bench_peer.dbos_app import dbos_config, parse_args
from sagaway.bench_peer.tuning import PeerTuning


def test_the_peer_databases_sit_beside_sagaways_and_speak_libpq() -> None:
    databases = PeerDatabases.derive(
        "postgresql+asyncpg://app:s3cret@db.internal:6543/sagaway?ssl=require", prefix="p"
    )

    assert databases.app_url == "postgresql://app:s3cret@db.internal:6543/p_app?sslmode=require"
    assert databases.system_url == "postgresql://app:s3cret@db.internal:6543/p_sys?sslmode=require"
    assert databases.names == ("p_app", "p_sys")


@pytest.mark.parametrize(
    "tuning",
    [
        PeerTuning(),
        PeerTuning(
            style="sync",
            sys_db_pool_size=7,
            app_pool_size=9,
            max_executor_threads=16,
            isolation_level="SERIALIZABLE",
            sys_db_pre_ping=True,
        ),
    ],
)
def test_the_server_gets_exactly_the_tuning_it_is_started_with(tuning: PeerTuning) -> None:
    config = parse_args(
        [
            "--app-database-url=postgresql://h/a",
            "--system-database-url=postgresql://h/s",
            "--port=9",
            "--mode=steps",
            *tuning.to_args(),
        ]
    )

    assert config.tuning == tuning
    settings = dbos_config(config)
    assert settings["sys_db_pool_size"] == tuning.sys_db_pool_size
    # Without the ping DBOS's engine arguments are restated, less the ping.
    assert ("db_engine_kwargs" in settings) is not tuning.sys_db_pre_ping
