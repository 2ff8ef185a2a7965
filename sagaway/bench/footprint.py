"""What a process holds, read from ``/proc``: memory, descriptors, threads, connections.

A soak names the processes it watches by component. They are found by the port they
listen on (the API's HTTP port, a component's ``/metrics`` side port), so a bench that
knows where to scrape a component also knows which process it is, whatever layout
``sagaway up`` chose; ``--pid NAME=PID`` names others. The parent of the API, when it
is ``sagaway up``, is watched too, as ``supervisor``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"
ESTABLISHED = "01"
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Socket:
    """One TCP socket of ``/proc/net/tcp``: its ports, state and inode."""

    local_port: int
    remote_port: int
    state: str
    inode: int


def parse_tcp_table(text: str) -> list[Socket]:
    """Parse ``/proc/net/tcp`` or ``/proc/net/tcp6`` (the header line is skipped)."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote = fields[1], fields[2]
        sockets.append(
            Socket(
                local_port=int(local.rpartition(":")[2], 16),
                remote_port=int(remote.rpartition(":")[2], 16),
                state=fields[3],
                inode=int(fields[9]),
            )
        )
    return sockets


def parse_status(text: str) -> tuple[float | None, int | None]:
    """Resident memory (MiB) and thread count from ``/proc/<pid>/status``."""
    rss_mb: float | None = None
    threads: int | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "VmRSS":
            rss_mb = int(value.split()[0]) * 1024 / _MIB
        elif key == "Threads":
            threads = int(value)
    return rss_mb, threads


@dataclass(frozen=True)
class Footprint:
    """What one process held at one moment.

    Attributes:
        rss_mb: Resident memory, MiB.
        fds: Open file descriptors.
        threads: OS threads.
        connections: Established TCP connections by remote port (5432, 5672...).
    """

    rss_mb: float
    fds: int
    threads: int
    connections: Mapping[int, int]


class ProcFs:
    """Reads processes and sockets from a procfs.

    Args:
        root: Where procfs is mounted.
    """

    def __init__(self, root: Path = Path("/proc")) -> None:
        self._root = root

    def sockets(self) -> list[Socket]:
        """Every IPv4 and IPv6 TCP socket of this network namespace."""
        found: list[Socket] = []
        for name in ("tcp", "tcp6"):
            try:
                found += parse_tcp_table((self._root / "net" / name).read_text())
            except OSError:
                continue
        return found

    def socket_inodes(self, pid: int) -> set[int]:
        """The inodes of the sockets ``pid`` has open (empty when it cannot be read)."""
        inodes = set()
        for target in self._fd_targets(pid):
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        return inodes

    def listeners(self, ports: Sequence[int]) -> dict[int, list[int]]:
        """Port → the pids holding a socket that listens on it (each port of
        ``ports`` that is listened on)."""
        wanted = {s.inode: s.local_port for s in self.sockets() if s.state == LISTEN}
        wanted = {inode: port for inode, port in wanted.items() if port in ports}
        found: dict[int, list[int]] = {}
        if not wanted:
            return found
        for pid in self._pids():
            for inode in self.socket_inodes(pid) & wanted.keys():
                found.setdefault(wanted[inode], []).append(pid)
        return found

    def parent(self, pid: int) -> int | None:
        """The parent's pid (None when ``pid`` is gone)."""
        try:
            stat = (self._root / str(pid) / "stat").read_text()
        except OSError:
            return None
        return int(stat.rpartition(")")[2].split()[1])

    def command(self, pid: int) -> list[str]:
        """The command line of ``pid`` (empty when gone or unreadable)."""
        try:
            raw = (self._root / str(pid) / "cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]

    def start_ticks(self, pid: int) -> int | None:
        """When ``pid`` started (clock ticks since boot): tells a restarted process from
        the one that had its pid; None when gone."""
        try:
            stat = (self._root / str(pid) / "stat").read_text()
        except OSError:
            return None
        return int(stat.rpartition(")")[2].split()[19])

    def footprint(self, pid: int, sockets: Sequence[Socket]) -> Footprint | None:
        """What ``pid`` holds now (None when it is gone)."""
        try:
            rss_mb, threads = parse_status((self._root / str(pid) / "status").read_text())
        except OSError:
            return None
        targets = list(self._fd_targets(pid))
        if rss_mb is None or threads is None or not targets:
            return None  # a zombie, or gone while we looked
        mine = {int(t[8:-1]) for t in targets if t.startswith("socket:[")}
        connections: dict[int, int] = {}
        for socket in sockets:
            if socket.inode in mine and socket.state == ESTABLISHED:
                connections[socket.remote_port] = connections.get(socket.remote_port, 0) + 1
        return Footprint(rss_mb=rss_mb, fds=len(targets), threads=threads, connections=connections)

    def _pids(self) -> Iterator[int]:
        try:
            entries = os.listdir(self._root)
        except OSError:
            return
        for entry in entries:
            if entry.isdigit():
                yield int(entry)

    def _fd_targets(self, pid: int) -> Iterator[str]:
        directory = self._root / str(pid) / "fd"
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            try:
                yield os.readlink(directory / name)
            except OSError:
                continue  # closed while we looked


def is_sagaway_up(command: Sequence[str]) -> bool:
    """Whether a command line is ``sagaway up`` (the console script, or ``-m sagaway``)."""
    return any(
        (part == "sagaway" or part.endswith("/sagaway")) and command[i + 1] == "up"
        for i, part in enumerate(command[:-1])
    )


class ProcessWatch:
    """The footprint of named processes, sample after sample.

    A process found by its port that is gone (restarted by ``sagaway up``) is looked up
    again by that port, and the restart is reported.

    Args:
        procfs: Where processes are read.
        ports: Name → the local port its process listens on.
        pids: Name → pids given outright (several of one name add up).
        connection_ports: Series name → remote port whose connections are counted
            (``pg_conns`` → 5432...).
    """

    def __init__(
        self,
        procfs: ProcFs,
        *,
        ports: Mapping[str, int],
        pids: Mapping[str, Sequence[int]],
        connection_ports: Mapping[str, int],
    ) -> None:
        self._procfs = procfs
        self._ports = dict(ports)
        self._connection_ports = dict(connection_ports)
        self._pids: dict[str, list[int]] = {name: list(p) for name, p in pids.items()}
        self._started: dict[int, int | None] = {}
        self.restarts: dict[str, int] = {}
        self.exited: list[str] = []
        self._seen: set[str] = set()
        self._find_by_port(list(self._ports))
        self._find_supervisor()

    @property
    def processes(self) -> dict[str, list[int]]:
        """Name → the pids watched now."""
        return {name: list(pids) for name, pids in self._pids.items()}

    @property
    def missing(self) -> list[str]:
        """Names whose port no process on this machine listens on."""
        return sorted(name for name in self._ports if not self._pids.get(name))

    def sample(self) -> dict[str, float]:
        """``proc.<name>.<figure>`` of every watched process now (a process gone and not
        found again is left out)."""
        gone = [
            name
            for name, pids in self._pids.items()
            if any(self._procfs.start_ticks(pid) != self._started.get(pid) for pid in pids)
        ]
        # Found once, then lost without being found again: keep looking.
        lost = [name for name in self._ports if name in self._seen and not self._pids.get(name)]
        for name in gone:
            # A process named by its pid cannot be found again: it is left out from now.
            if name not in self._ports:
                self.exited.append(name)
                del self._pids[name]
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
        self._find_by_port([name for name in gone if name in self._ports] + lost)
        sockets = self._procfs.sockets()
        values: dict[str, float] = {}
        for name, pids in sorted(self._pids.items()):
            prints = [self._procfs.footprint(pid, sockets) for pid in pids]
            if not prints or any(p is None for p in prints):
                continue
            held = [p for p in prints if p is not None]
            values[f"proc.{name}.rss_mb"] = sum(p.rss_mb for p in held)
            values[f"proc.{name}.fds"] = sum(p.fds for p in held)
            values[f"proc.{name}.threads"] = sum(p.threads for p in held)
            for series, port in self._connection_ports.items():
                values[f"proc.{name}.{series}"] = sum(p.connections.get(port, 0) for p in held)
        return values

    def _find_by_port(self, names: Sequence[str]) -> None:
        if not names:
            return
        listening = self._procfs.listeners([self._ports[name] for name in names])
        for name in names:
            self._pids[name] = listening.get(self._ports[name], [])
            if self._pids[name]:
                self._seen.add(name)
            self._remember(self._pids[name])

    def _find_supervisor(self) -> None:
        for pid in self._pids.get("api", []):
            parent = self._procfs.parent(pid)
            if parent is not None and is_sagaway_up(self._procfs.command(parent)):
                self._pids.setdefault("supervisor", [parent])
                break
        for pids in self._pids.values():
            self._remember(pids)

    def _remember(self, pids: Sequence[int]) -> None:
        for pid in pids:
            self._started[pid] = self._procfs.start_ticks(pid)
