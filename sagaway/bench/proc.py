"""CPU time of processes on this machine, read from ``/proc/<pid>/stat``.

For processes that expose no ``/metrics`` (PostgreSQL, RabbitMQ) or that are not
sagaway's (a peer implementation measured side by side): by command name, or by pid.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

POSTGRES_COMMANDS = frozenset({"postgres"})
"""The postmaster, every backend and every auxiliary process (checkpointer, walwriter,
autovacuum...) are all called ``postgres``."""
RABBITMQ_COMMANDS = frozenset({"beam.smp", "epmd", "erl_child_setup", "inet_gethost"})
"""The Erlang VM and its helper processes."""
DEFAULT_GROUPS: Mapping[str, frozenset[str]] = {
    "postgres": POSTGRES_COMMANDS,
    "rabbitmq": RABBITMQ_COMMANDS,
}


@dataclass(frozen=True)
class ProcStat:
    """The CPU fields of one ``/proc/<pid>/stat`` line, in clock ticks.

    ``cutime``/``cstime`` are the children the process has waited for: PostgreSQL's
    postmaster collects there the time of every backend and autovacuum worker that
    exited, so a sum over live processes that includes them loses nothing to exits.
    """

    pid: int
    comm: str
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def ticks(self) -> int:
        """Its own CPU time and that of its reaped children."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(line: str) -> ProcStat:
    """Parse a ``/proc/<pid>/stat`` line.

    The command name is between the first ``(`` and the last ``)``: it may itself hold
    spaces and parentheses.

    Raises:
        ValueError: Not a stat line.
    """
    head, sep, tail = line.rpartition(")")
    pid, paren, comm = head.partition(" (")
    if not sep or not paren:
        raise ValueError(f"not a /proc stat line: {line[:80]!r}")
    # Fields after the name, from field 3 (state); utime is field 14 of stat(5).
    fields = tail.split()
    if len(fields) < 15:
        raise ValueError(f"not a /proc stat line: {line[:80]!r}")
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcStat(int(pid), comm, utime, stime, cutime, cstime)


class CpuSampler:
    """CPU seconds used so far by groups of processes: by command name, or by pid.

    Args:
        comm_groups: Group name → command names (``comm``, at most 15 characters).
        pids: Group name → pids.
        proc: Where procfs is mounted.
    """

    def __init__(
        self,
        *,
        comm_groups: Mapping[str, Collection[str]] = DEFAULT_GROUPS,
        pids: Mapping[str, Collection[int]] | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        self._comm_groups = dict(comm_groups)
        self._pids = dict(pids or {})
        self._proc = proc
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")

    @property
    def groups(self) -> list[str]:
        """The group names, command-name groups first."""
        return [*self._comm_groups, *self._pids]

    def sample(self) -> dict[str, float | None]:
        """CPU seconds of each group, or None for a group with no process to be seen
        (not on this machine, no such pid, or no ``/proc`` at all)."""
        ticks: dict[str, int | None] = dict.fromkeys(self.groups)
        by_pid = {pid: group for group, pids in self._pids.items() for pid in pids}
        missing = {group: set(pids) for group, pids in self._pids.items()}
        for stat in self._stats():
            groups = [g for g, names in self._comm_groups.items() if stat.comm in names]
            if stat.pid in by_pid:
                groups.append(by_pid[stat.pid])
                missing[by_pid[stat.pid]].discard(stat.pid)
            for group in groups:
                ticks[group] = (ticks[group] or 0) + stat.ticks
        for group, pids in missing.items():
            if pids:  # a pid of the group is gone: its sum would be wrong
                ticks[group] = None
        return {g: None if t is None else t * self._tick_s for g, t in ticks.items()}

    def per_pid(self, pids: Collection[int]) -> dict[int, float]:
        """CPU seconds of each of ``pids`` still running (its own, not its children's)."""
        seconds: dict[int, float] = {}
        for pid in pids:
            try:
                stat = parse_stat((self._proc / str(pid) / "stat").read_text())
            except (OSError, ValueError):
                continue
            seconds[pid] = (stat.utime + stat.stime) * self._tick_s
        return seconds

    def _stats(self) -> Iterator[ProcStat]:
        try:
            entries = list(self._proc.iterdir())
        except OSError:
            return
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                yield parse_stat((entry / "stat").read_text())
            except (OSError, ValueError):
                continue  # exited while we looked, or not ours to read
