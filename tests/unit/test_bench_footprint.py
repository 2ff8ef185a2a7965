"""What ``sagaway bench soak`` reads from /proc, on a procfs laid out in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sagaway.bench.footprint import (
    ProcessWatch,
    ProcFs,
    is_sagaway_up,
    parse_status,
    parse_tcp_table,
)

pytestmark = pytest.mark.unit

TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
)


def _tcp_line(local_port: int, remote_port: int, state: str, inode: int) -> str:
    return (
        f"   0: 0100007F:{local_port:04X} 0100007F:{remote_port:04X} {state} "
        f"00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0 100 0 0 10 0\n"
    )


def _process(
    root: Path,
    pid: int,
    *,
    parent: int = 1,
    start: int = 1000,
    rss_kb: int = 51200,
    threads: int = 3,
    sockets: tuple[int, ...] = (),
    files: int = 2,
    command: tuple[str, ...] = ("python3", "-m", "sagaway", "api"),
) -> None:
    folder = root / str(pid)
    (folder / "fd").mkdir(parents=True, exist_ok=True)
    # stat(5): pid (comm) state ppid ... starttime is field 22.
    fields = ["S", str(parent), *["0"] * 17, str(start)]
    (folder / "stat").write_text(f"{pid} (python3) {' '.join(fields)} 0 0\n")
    (folder / "status").write_text(f"Name:\tpython3\nVmRSS:\t  {rss_kb} kB\nThreads:\t{threads}\n")
    (folder / "cmdline").write_bytes(b"\0".join(part.encode() for part in command) + b"\0")
    for n in range(files):
        os.symlink(f"/dev/null{n}", folder / "fd" / str(n))
    for n, inode in enumerate(sockets, start=files):
        os.symlink(f"socket:[{inode}]", folder / "fd" / str(n))


def _net(root: Path, *lines: str) -> None:
    (root / "net").mkdir(exist_ok=True)
    (root / "net" / "tcp").write_text(TCP_HEADER + "".join(lines))
    (root / "net" / "tcp6").write_text(TCP_HEADER)


def test_the_tcp_table_gives_ports_state_and_inode() -> None:
    sockets = parse_tcp_table(TCP_HEADER + _tcp_line(8000, 0, "0A", 111) + "garbage\n")
    assert [(s.local_port, s.remote_port, s.state, s.inode) for s in sockets] == [
        (8000, 0, "0A", 111)
    ]


def test_status_gives_resident_memory_in_mib_and_threads() -> None:
    assert parse_status("Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t7\n") == (2.0, 7)
    assert parse_status("Name:\tkworker\n") == (None, None)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["/v/bin/python3", "/v/bin/sagaway", "up", "--api-port", "8000"], True),
        (["python3", "-m", "sagaway", "up"], True),
        (["python3", "-m", "sagaway", "api", "up"], False),
        (["python3", "-m", "pytest"], False),
        ([], False),
    ],
)
def test_sagaway_up_is_known_by_its_command_line(command: list[str], expected: bool) -> None:
    assert is_sagaway_up(command) is expected


def test_processes_are_found_by_the_port_they_listen_on_with_their_supervisor(
    tmp_path: Path,
) -> None:
    _net(
        tmp_path,
        _tcp_line(8000, 0, "0A", 500),  # the API listens
        _tcp_line(9406, 0, "0A", 600),  # the backend's /metrics
        _tcp_line(40001, 5432, "01", 501),  # the API's two PostgreSQL connections
        _tcp_line(40002, 5432, "01", 502),
        _tcp_line(40003, 5672, "01", 601),  # the backend's AMQP connection
        _tcp_line(40004, 5432, "06", 602),  # TIME_WAIT: not a connection any more
    )
    _process(tmp_path, 10, command=("/v/bin/python3", "/v/bin/sagaway", "up"))
    _process(tmp_path, 11, parent=10, sockets=(500, 501, 502), files=3, rss_kb=102400)
    _process(tmp_path, 12, parent=10, sockets=(600, 601, 602), threads=2)
    (tmp_path / "self").mkdir()

    watch = ProcessWatch(
        ProcFs(tmp_path),
        ports={"api": 8000, "backend": 9406, "relay": 9401},
        pids={},
        connection_ports={"pg_conns": 5432, "amqp_conns": 5672},
    )

    assert watch.processes == {"api": [11], "backend": [12], "relay": [], "supervisor": [10]}
    assert watch.missing == ["relay"]
    values = watch.sample()
    assert {k: v for k, v in values.items() if k.startswith("proc.api.")} == {
        "proc.api.rss_mb": 100.0,
        "proc.api.fds": 6,
        "proc.api.threads": 3,
        "proc.api.pg_conns": 2,
        "proc.api.amqp_conns": 0,
    }
    assert values["proc.backend.amqp_conns"] == 1
    assert values["proc.backend.pg_conns"] == 0
    assert values["proc.supervisor.fds"] == 2
    assert watch.restarts == {}


def test_a_restarted_component_is_found_again_by_its_port_and_counted(tmp_path: Path) -> None:
    _net(tmp_path, _tcp_line(9406, 0, "0A", 600))
    _process(tmp_path, 12, sockets=(600,), start=1000)
    watch = ProcessWatch(ProcFs(tmp_path), ports={"backend": 9406}, pids={}, connection_ports={})
    assert watch.sample()["proc.backend.rss_mb"] == 50.0

    # The supervisor restarted it: the old pid is gone, a new one listens.
    for entry in (tmp_path / "12" / "fd").iterdir():
        entry.unlink()
    (tmp_path / "12" / "fd").rmdir()
    for entry in (tmp_path / "12").iterdir():
        entry.unlink()
    (tmp_path / "12").rmdir()
    _process(tmp_path, 13, sockets=(600,), start=2000, rss_kb=40960)

    assert watch.sample()["proc.backend.rss_mb"] == 40.0
    assert watch.processes == {"backend": [13]}
    assert watch.restarts == {"backend": 1}
    watch.sample()
    assert watch.restarts == {"backend": 1}


def test_a_process_named_by_pid_that_exits_is_left_out(tmp_path: Path) -> None:
    _net(tmp_path)
    _process(tmp_path, 20, start=1000)
    watch = ProcessWatch(ProcFs(tmp_path), ports={}, pids={"relay": [20]}, connection_ports={})
    assert "proc.relay.rss_mb" in watch.sample()

    # Same pid, another process: not the one we were watching.
    (tmp_path / "20" / "stat").write_text(f"20 (python3) S 1 {' '.join(['0'] * 17)} 5000 0 0\n")
    assert watch.sample() == {}
    assert watch.exited == ["relay"]
