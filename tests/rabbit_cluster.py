"""A RabbitMQ cluster of the tests' own: three extra nodes of this machine's installation.

Each node has its own name (``sgw-<run>-a@localhost``...), AMQP and distribution ports,
data and log folders, pid file, an empty plugin list and a config file of its own; the
nodes share an Erlang cookie of their own, so they cannot even talk to the machine's
main broker (``rabbit@<host>``), let alone join it. They are clustered with
``rabbitmqctl stop_app / join_cluster / start_app`` and torn down (killed, folders
deleted) however the tests end. The logs are copied to ``tests/artifacts`` first.

The helpers are what fault tests need: kill a node with SIGKILL (its beam process, found
through its pid file), stop one cleanly, start it again, stop or start them all, and
find which node leads a quorum queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

from tests.support import free_port, wait_for

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "rabbit-cluster"
# Where the Debian/RPM packages keep the real scripts (those on PATH, in /usr/sbin, are
# wrappers that switch to the rabbitmq user, its home and the system's node name).
PACKAGED_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
# A node boots in about 10 s here; generous for two shared, busy cores.
BOOT_S = 120.0
CTL_S = 120.0


class ClusterUnavailable(RuntimeError):
    """This machine cannot run extra RabbitMQ nodes (the reason says why)."""


def scripts_dir() -> Path:
    """The folder of ``rabbitmq-server`` and ``rabbitmqctl`` that honour RABBITMQ_*."""
    if (PACKAGED_SCRIPTS / "rabbitmq-server").exists():
        return PACKAGED_SCRIPTS
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise ClusterUnavailable("RabbitMQ is not installed (no rabbitmq-server)")
    return Path(found).resolve().parent


@dataclass
class RabbitNode:
    """One node of the test cluster."""

    name: str
    port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its AMQP URL (the default guest user may connect over the loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def address(self) -> str:
        """``host:port``, as sagaway names a node."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether its server process is alive."""
        return self.process is not None and self.process.poll() is None

    def beam_pid(self) -> int:
        """The Erlang VM's pid, which the node writes to its pid file."""
        return int((self.base / "pid").read_text().strip())


@dataclass
class RabbitCluster:
    """Three (or ``size``) extra RabbitMQ nodes clustered together, for one test run."""

    run: str
    size: int = 3
    root: Path = field(init=False)
    nodes: list[RabbitNode] = field(init=False)
    _scripts: Path = field(init=False)
    _user: pwd.struct_passwd | None = field(init=False)

    def __post_init__(self) -> None:
        self._scripts = scripts_dir()
        # The packaged scripts refuse nothing, but a node run as root would own its
        # files as root: run as the package's user when we are root.
        self._user = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("rabbitmq")
            except KeyError as exc:
                raise ClusterUnavailable("running as root and there is no rabbitmq user") from exc
        self.root = Path(f"/tmp/sgw-rabbit-{self.run}")
        self.nodes = [
            RabbitNode(
                name=f"sgw-{self.run}-{chr(ord('a') + i)}@localhost",
                port=free_port(),
                dist_port=free_port(),
                base=self.root / chr(ord("a") + i),
            )
            for i in range(self.size)
        ]

    @property
    def amqp_url(self) -> str:
        """``SAGAWAY_AMQP_URL`` listing every node."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> RabbitNode:
        """The node called ``name``."""
        return next(n for n in self.nodes if n.name == name)

    # --- life cycle --------------------------------------------------------------------

    async def create(self) -> None:
        """Start every node at once, wait for them, and cluster the others to the first."""
        self.root.mkdir(mode=0o755)
        home = self.root / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self.root / "rabbitmq-env.conf").write_text("")
        for node in self.nodes:
            node.base.mkdir()
            (node.base / "enabled_plugins").write_text("[].\n")
            (node.base / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.port}\nlog.console = false\n"
            )
        if self._user is not None:
            for path in (self.root, *self.root.rglob("*")):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        await self.start(*self.nodes)
        first, *others = self.nodes
        for node in others:
            await self.ctl(node, "stop_app")
            await self.ctl(node, "join_cluster", first.name)
            await self.ctl(node, "start_app")
        await self.wait_clustered()

    async def start(self, *nodes: RabbitNode) -> None:
        """Start ``nodes`` (all at once) and wait until each accepts AMQP connections."""
        for node in nodes:
            self._spawn(node)
        await asyncio.gather(*(self._until_serving(node) for node in nodes))

    async def kill(self, *nodes: RabbitNode) -> None:
        """``kill -9`` the nodes' Erlang VMs, as a crash or a lost machine would."""
        for node in nodes:
            assert node.running, f"{node.name} is not running"
            os.kill(node.beam_pid(), signal.SIGKILL)
        for node in nodes:
            assert node.process is not None
            await asyncio.to_thread(node.process.wait, 30)

    async def stop(self, *nodes: RabbitNode) -> None:
        """Stop ``nodes`` cleanly (``rabbitmqctl stop``), all at once."""

        async def one(node: RabbitNode) -> None:
            assert node.process is not None
            await self.ctl(node, "stop")
            await asyncio.to_thread(node.process.wait, 60)

        await asyncio.gather(*(one(node) for node in nodes))

    async def destroy(self) -> None:
        """Kill every node still running and delete the folders (logs kept in artifacts)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                # The whole process group the node was started in (its own session):
                # the script, the Erlang VM and its helpers, even if it is still booting.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGKILL)
                await asyncio.to_thread(node.process.wait, 30)
        keep = ARTIFACTS / self.run
        for log in self.root.glob("*/log/*.log"):
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, keep / log.name)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- what the tests ask -------------------------------------------------------------

    async def ctl(self, node: RabbitNode, *args: str, tool: str = "rabbitmqctl") -> str:
        """Run ``rabbitmqctl -n <node> args...`` (or another CLI tool); its output."""
        process = await asyncio.create_subprocess_exec(
            str(self._scripts / tool),
            "-n",
            node.name,
            *args,
            env=self._env(None),
            cwd=self.root,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            **self._as_user(),
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), CTL_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise AssertionError(
                f"{tool} -n {node.name} {' '.join(args)} exited {process.returncode}: "
                f"{err.decode(errors='replace')}{out.decode(errors='replace')}"
            )
        return out.decode()

    async def queues(self, prefix: str) -> list[dict[str, Any]]:
        """Name, type, leader and members of every queue whose name starts with
        ``prefix``, as a running node sees them."""
        node = next(n for n in self.nodes if n.running)
        out = await self.ctl(
            node,
            "list_queues",
            "name",
            "type",
            "leader",
            "members",
            "--formatter",
            "json",
            "--quiet",
        )
        return [q for q in json.loads(out) if str(q["name"]).startswith(prefix)]

    async def wait_clustered(self) -> None:
        """Until every node runs and each sees all the others running."""

        async def running_nodes() -> set[str]:
            # The nodes share one membership table: one node's view is the cluster's.
            status = json.loads(
                await self.ctl(self.nodes[0], "cluster_status", "--formatter", "json")
            )
            return set(status["running_nodes"])

        everyone = {n.name for n in self.nodes}
        await wait_for(
            running_nodes,
            until=lambda seen: seen == everyone,
            within=BOOT_S,
            interval=1.0,
            what="every node clustered and running",
        )

    # --- plumbing -----------------------------------------------------------------------

    def _env(self, node: RabbitNode | None) -> dict[str, str]:
        # Nothing of the caller's environment but PATH: no RABBITMQ_* or SAGAWAY_* of
        # the test run leaks into a node.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.root / "home"),
            # Not /etc/rabbitmq/rabbitmq-env.conf, which names the main broker's node.
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        if node is not None:
            env |= {
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_PORT": str(node.port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.base / "log"),
                "RABBITMQ_PID_FILE": str(node.base / "pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.base / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(node.base / "plugins-expand"),
                "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.base / "advanced.config"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
            }
        return env

    def _spawn(self, node: RabbitNode) -> None:
        assert not node.running, f"{node.name} is running"
        (node.base / "pid").unlink(missing_ok=True)
        with (node.base / "server.out").open("ab") as log:
            node.process = subprocess.Popen(
                [str(self._scripts / "rabbitmq-server")],
                env=self._env(node),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Its own session: a Ctrl-C meant for pytest does not stop it half-way.
                start_new_session=True,
                **self._as_user(),
            )

    def _as_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    async def _until_serving(self, node: RabbitNode) -> None:
        """Until the node accepts an AMQP connection: it opens its listener last."""

        async def serving() -> bool:
            if not node.running:
                raise AssertionError(
                    f"{node.name} exited while booting; see {node.base / 'server.out'}"
                )
            # A plain TCP connect first: an AMQP client logs every refused attempt.
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", node.port)
            except OSError:
                return False
            writer.close()
            try:
                connection = await aio_pika.connect(node.url, timeout=2)
            except (OSError, aio_pika.exceptions.AMQPError, TimeoutError):
                return False
            await connection.close()
            return True

        await wait_for(serving, within=BOOT_S, interval=0.25, what=f"{node.name} serving")
