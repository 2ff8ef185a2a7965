"""A PostgreSQL server of the tests' own, to crash, stop and start at will.

The machine's main cluster is shared (by every test run, and by whoever else works on
the machine), so a test that needs PostgreSQL to crash or refuse connections runs its
own: ``initdb`` into a temporary directory, a free port on 127.0.0.1, trust
authentication, and durable settings (``fsync`` on, synchronous commit), so that an
immediate shutdown or a killed postmaster is followed by a real crash recovery from the
WAL. It uses this machine's installation (the newest ``/usr/lib/postgresql/*/bin``, or
whatever ``pg_config --bindir`` names); the binaries refuse to run as root, so as root
they run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support import free_port, wait_until

RECOVERY = "database system was not properly shut down; automatic recovery in progress"
"""What the server logs when it starts after a crash and replays its WAL."""

START_TIMEOUT_S = 60


def find_bindir() -> Path:
    """The directory of this machine's PostgreSQL server binaries (the newest version)."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: [int(part) for part in p.parent.name.split(".") if part.isdigit()],
    )
    if versions:
        return versions[-1]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout
        if out.strip() and (Path(out.strip()) / "initdb").exists():
            return Path(out.strip())
    raise RuntimeError(
        "no PostgreSQL server binaries (initdb, pg_ctl) on this machine: the tests that"
        " crash PostgreSQL run a private server and need them installed"
    )


class PrivatePostgres:
    """One private PostgreSQL server: created by :meth:`create`, gone after :meth:`remove`.

    Every method is synchronous (it runs ``pg_ctl``); async tests call them through
    ``asyncio.to_thread``.
    """

    def __init__(self, root: Path, *, port: int, bindir: Path) -> None:
        self.root = root
        self.port = port
        self.bindir = bindir
        self.data = root / "data"
        self.log = root / "server.log"

    @classmethod
    def create(cls, *, bindir: Path | None = None) -> PrivatePostgres:
        """``initdb`` a new cluster in a temporary directory and start it."""
        root = Path(tempfile.mkdtemp(prefix="sagaway-pg-"))
        server = cls(root, port=free_port(), bindir=bindir or find_bindir())
        try:
            if os.geteuid() == 0:
                user = pwd.getpwnam("postgres")
                os.chown(root, user.pw_uid, user.pw_gid)
            server._run("initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--no-sync")  # fmt: skip
            with (server.data / "postgresql.conf").open("a") as conf:
                # Durable like production: what a commit acknowledged must survive a
                # crash, so crash recovery has real work to do. The socket lives in the
                # server's own directory, never next to the main cluster's.
                conf.write(
                    "\n# sagaway tests: a private server\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {server.port}\n"
                    f"unix_socket_directories = '{root}'\n"
                    "fsync = on\n"
                    "synchronous_commit = on\n"
                    "full_page_writes = on\n"
                    "max_connections = 100\n"
                    "log_line_prefix = '%m [%p] '\n"
                )
            server.start()
        except BaseException:
            server.remove()
            raise
        return server

    def url(self, database: str) -> str:
        """A ``SAGAWAY_DATABASE_URL`` for ``database`` on this server."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it accepts connections (after any recovery)."""
        if not self.running():
            self._wait_orphans_gone()
        self._pg_ctl("start", "-l", str(self.log), "-t", str(START_TIMEOUT_S))

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are ended; new connections are refused)."""
        self._pg_ctl("stop", "-m", mode)

    def restart_immediate(self) -> None:
        """``pg_ctl restart -m immediate``: the server quits without a checkpoint, as in a
        crash, and starts again with a crash recovery."""
        self._pg_ctl("restart", "-m", "immediate", "-l", str(self.log), "-t",
                     str(START_TIMEOUT_S))  # fmt: skip

    def kill_postmaster(self) -> int:
        """``kill -9`` the postmaster; returns its pid. Its backends notice and exit; the
        server stays down until :meth:`start` (which then recovers from the WAL)."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("the private PostgreSQL server is not running")
        os.kill(pid, signal.SIGKILL)
        # Until it is reaped, not merely dead: a new postmaster takes a zombie named in
        # the lock file for a server still running.
        wait_until(
            lambda: not Path(f"/proc/{pid}").exists(),
            within=START_TIMEOUT_S,
            interval=0.01,
            what=f"postmaster {pid} gone after SIGKILL",
        )
        return pid

    def running(self) -> bool:
        """Whether the postmaster is alive."""
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def ensure_running(self) -> None:
        """Start the server if an earlier test left it down."""
        if not self.running():
            self.start()

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid, from its lock file (None when there is none)."""
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def recoveries(self) -> int:
        """How many times the server has started with a crash recovery so far."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count(RECOVERY)

    def remove(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and delete its files."""
        if self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # --- internals -----------------------------------------------------------------------

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", *args)

    def _run(self, binary: str, *args: str) -> None:
        command = [str(self.bindir / binary), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, command, result.stdout, result.stderr
            )

    def _wait_orphans_gone(self) -> None:
        """After a killed postmaster, wait until its backends have exited: a new one
        refuses to start while they still hold the old shared memory."""
        wait_until(
            lambda: not any(self._orphans()),
            within=START_TIMEOUT_S,
            interval=0.05,
            what="backends of the killed postmaster exited",
        )

    def _orphans(self) -> Iterator[int]:
        # A server process's working directory is its data directory.
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(entry / "cwd")) == self.data:
                        yield int(entry.name)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
