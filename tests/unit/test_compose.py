"""docker-compose.yml and the Dockerfile, checked as far as possible without a Docker engine.

`docker compose config` would validate the file against the compose spec, but CI has no
Docker; these tests check what breaks a deployment in practice instead: a missing
service, a command `sagaway` does not know, a variable `Settings` ignores, a start-up
order that lets a component run against an unmigrated database.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from sagaway.cli import app
from sagaway.outbox.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Which `sagaway` command each service must run: a copy-pasted `worker payment` in the
# inventory service would otherwise go unnoticed until inventory never answers.
COMMANDS: Mapping[str, tuple[str, ...]] = {
    "migrate": ("migrate",),
    "api": ("api",),
    "relay": ("relay",),
    "orchestrator": ("orchestrator",),
    "inventory": ("worker", "inventory"),
    "payment": ("worker", "payment"),
    "notification": ("worker", "notification"),
}
SAGAWAY_SERVICES = tuple(COMMANDS)
APP_SERVICES = tuple(name for name in SAGAWAY_SERVICES if name != "migrate")
INFRA_SERVICES = ("postgres", "rabbitmq")
TOP_LEVEL_KEYS = {"name", "include", "services", "networks", "volumes", "configs", "secrets"}
# `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}` and plain `${VAR}`.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


# --- loading ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    document = yaml.safe_load(compose_text)
    assert isinstance(document, dict), "docker-compose.yml must be a mapping"
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


def interpolate(value: str) -> str:
    """Resolve `${VAR:-default}` to its default, as a fresh checkout without .env would."""

    def default(match: re.Match[str]) -> str:
        op = match["op"] or ""
        assert op.endswith("-"), f"{match[0]} has no default: `docker compose up` needs it set"
        return match["arg"]

    return INTERPOLATION.sub(default, value)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as `KEY=value` lines."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {
        str(key): interpolate("" if value is None else str(value)) for key, value in raw.items()
    }


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency -> condition; the short list form means `service_started`."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), "a sagaway service needs a command (the entrypoint is bare)"
    return [str(part) for part in command]


def healthcheck_test(service: Mapping[str, Any]) -> str:
    check = service.get("healthcheck")
    assert isinstance(check, dict) and not check.get("disable"), "no healthcheck"
    test = check.get("test")
    if isinstance(test, list):
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"bad healthcheck test {test!r}"
        return " ".join(str(part) for part in test[1:])
    assert isinstance(test, str) and test, "empty healthcheck test"
    return test


def container_ports(service: Mapping[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def parse(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `sagaway ARGS` fully (types, choices, ranges) without running the command.

    Returns the subcommand's name and its converted parameters. Only public Typer calls
    are used: recent Typer releases vendor Click, so `click.Group` checks do not hold.
    """
    group = typer.main.get_command(app)
    name, *rest = args
    root = group.context_class(group, info_name="sagaway")
    command = group.get_command(root, name)  # type: ignore[attr-defined]
    assert command is not None, f"`sagaway {name}` does not exist"
    try:
        context = command.make_context(name, rest, parent=root)
    except Exception as error:  # Click's UsageError, vendored or not
        format_message = getattr(error, "format_message", None)
        message = format_message() if callable(format_message) else str(error)
        pytest.fail(f"`sagaway {shlex.join(args)}` is rejected: {message}")
    try:
        return str(command.name), dict(context.params)
    finally:
        context.close()


# --- Dockerfile -----------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def last(instruction: str) -> str:
    found = [args for keyword, args in dockerfile_instructions() if keyword == instruction]
    assert found, f"the Dockerfile has no {instruction}"
    return found[-1]


def exec_form(instruction: str) -> list[str]:
    value = json.loads(last(instruction))
    assert isinstance(value, list), f"{instruction} must use the exec (JSON) form"
    return [str(part) for part in value]


def test_dockerfile_entrypoint_is_the_sagaway_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert exec_form("ENTRYPOINT") == ["sagaway"]
    assert "sagaway" in scripts


def test_dockerfile_default_command_runs_everything_reachable() -> None:
    command = exec_form("CMD")
    name, params = parse(command)
    assert name == "up"
    # A server bound to 127.0.0.1 inside a container cannot be reached from outside it.
    assert params["api_host"] == "0.0.0.0"
    assert str(params["api_port"]) in last("EXPOSE").split()


def test_dockerfile_base_image_satisfies_requires_python() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", project["requires-python"])
    assert minimum, "requires-python is expected as >=X.Y"
    image = last("FROM").split()[0]
    version = re.fullmatch(r"python:(\d+)\.(\d+)[\w.-]*", image)
    assert version, f"base image {image} is not an official python:X.Y image"
    assert (int(version[1]), int(version[2])) >= (int(minimum[1]), int(minimum[2]))


def test_dockerfile_installs_the_project_non_editable_and_runs_unprivileged() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    installs = [run for run in runs if re.search(r"\bpip install\b", run)]
    assert installs, "the Dockerfile never pip-installs the project"
    assert not any(re.search(r"\s(-e|--editable)\b", run) for run in installs)
    assert last("USER").split(":")[0] not in ("root", "0")


def test_dockerignore_keeps_local_state_out_but_not_the_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern.rstrip("/")) for pattern in patterns)

    for path in (".venv", ".git", "tests/artifacts"):
        assert ignored(path), f".dockerignore lets {path} into the build context"
    packages = ["sagaway", "orchestrator", "services", "outbox", "migrations"]
    for path in ("pyproject.toml", "README.md", *packages):
        assert not ignored(path), f".dockerignore drops {path}, which `pip install .` needs"


# --- compose: shape -------------------------------------------------------------------


def test_compose_is_a_valid_spec_document(compose: dict[str, Any]) -> None:
    # The obsolete `version:` key makes current Compose warn; the spec has none.
    unknown = {key for key in compose if key not in TOP_LEVEL_KEYS and not key.startswith("x-")}
    assert not unknown, f"not compose-spec top-level keys: {sorted(unknown)}"


def test_every_component_has_a_service(services: dict[str, dict[str, Any]]) -> None:
    missing = (set(INFRA_SERVICES) | set(SAGAWAY_SERVICES)) - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_every_interpolated_variable_has_a_default(compose_text: str) -> None:
    # Comment lines may mention `${...}` freely; only real values must resolve.
    for line in compose_text.splitlines():
        if not line.lstrip().startswith("#"):
            interpolate(line)


def test_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.get("source", "") if isinstance(volume, dict) else volume.split(":")[0]
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


# --- compose: the sagaway services ----------------------------------------------------


@pytest.mark.parametrize("name", SAGAWAY_SERVICES)
def test_service_builds_the_one_dockerfile(name: str, services: dict[str, dict[str, Any]]) -> None:
    build = services[name].get("build")
    assert build is not None, f"{name} is not built from this repository"
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
    assert dockerfile == DOCKERFILE.resolve(), f"{name} builds {dockerfile}"
    assert DOCKERFILE.is_file()
    assert services[name]["build"] == services["api"]["build"], "one image for every component"


@pytest.mark.parametrize("name", SAGAWAY_SERVICES)
def test_service_command_is_a_real_sagaway_command(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    command = command_of(services[name])
    assert tuple(command[: len(COMMANDS[name])]) == COMMANDS[name], f"{name} runs {command}"
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    # `--help` is eager and skips argument validation; parse for real as well.
    parse(command)


@pytest.mark.parametrize("name", SAGAWAY_SERVICES)
def test_service_environment_is_understood_by_settings(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    env = {
        key: value
        for key, value in environment(services[name]).items()
        if key.startswith("SAGAWAY_")
    }
    fields = {f"SAGAWAY_{field.upper()}": field for field in Settings.model_fields}
    # Settings ignores unknown variables, so a typo would silently fall back to a default.
    unknown = set(env) - set(fields)
    assert not unknown, f"{name} sets variables Settings does not read: {sorted(unknown)}"
    for required in ("SAGAWAY_DATABASE_URL", "SAGAWAY_AMQP_URL"):
        assert required in env, f"{name} would use the 127.0.0.1 default for {required}"
    settings = Settings.model_validate({fields[key]: value for key, value in env.items()})
    # Inside the compose network the brokers are reached by service name.
    for url in (settings.database_url, settings.amqp_url):
        host = urlsplit(url).hostname
        assert host in services, f"{name} points at {host}, which is not a service"


def test_database_credentials_match_the_postgres_service(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = environment(services["postgres"])
    for name in SAGAWAY_SERVICES:
        url = urlsplit(environment(services[name])["SAGAWAY_DATABASE_URL"])
        assert url.hostname == "postgres"
        if postgres.get("POSTGRES_HOST_AUTH_METHOD") == "trust":
            continue
        assert url.username == postgres.get("POSTGRES_USER", "postgres"), name
        assert url.password == postgres.get("POSTGRES_PASSWORD"), name


@pytest.mark.parametrize("name", APP_SERVICES)
def test_component_starts_after_migration_and_healthy_brokers(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    assert depends_on(services[name]) == {
        "migrate": "service_completed_successfully",
        "postgres": "service_healthy",
        "rabbitmq": "service_healthy",
    }
    assert services[name].get("restart") in ("always", "unless-stopped")


def test_migrate_runs_once_after_postgres_is_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    migrate = services["migrate"]
    assert depends_on(migrate).get("postgres") == "service_healthy"
    assert "migrate" not in depends_on(migrate)
    # Unquoted, YAML reads `no` as false; a restarting one-off job never "completes".
    assert migrate.get("restart", "no") == "no"


def test_api_listens_where_it_is_published_and_checked(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    _, params = parse(command_of(api))
    host, port = params["host"], params["port"]
    assert host == "0.0.0.0", "the API must listen beyond the container's loopback"
    assert port in container_ports(api)
    test = healthcheck_test(api)
    assert f"127.0.0.1:{port}/healthz" in test or f"localhost:{port}/healthz" in test
    # python:*-slim has neither curl nor wget.
    assert not re.search(r"\b(curl|wget)\b", test)


def test_relay_readiness_is_checked_on_its_side_port(
    services: dict[str, dict[str, Any]],
) -> None:
    relay = services["relay"]
    environment = relay.get("environment", {})
    port = environment.get("SAGAWAY_METRICS_PORT")
    assert port, "the relay needs its side port for /readyz"
    test = healthcheck_test(relay)
    assert f"127.0.0.1:{port}/readyz" in test
    assert not re.search(r"\b(curl|wget)\b", test)
    # The relay keeps the shared connection settings besides its own port.
    assert {"SAGAWAY_DATABASE_URL", "SAGAWAY_AMQP_URL"} <= set(environment)


# --- compose: PostgreSQL and RabbitMQ -------------------------------------------------


def test_postgres_is_healthchecked(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert str(postgres.get("image", "")).startswith("postgres:")
    assert "pg_isready" in healthcheck_test(postgres)


def test_rabbitmq_is_a_healthchecked_management_image(
    services: dict[str, dict[str, Any]],
) -> None:
    rabbitmq = services["rabbitmq"]
    image = str(rabbitmq.get("image", ""))
    assert re.fullmatch(r"rabbitmq:[\w.-]*management[\w.-]*", image), image
    assert "rabbitmq-diagnostics" in healthcheck_test(rabbitmq)
    assert {5672, 15672} <= container_ports(rabbitmq)
