"""The application registry: validated when built, and everything derived from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

import pytest
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from sagaway import (
    Action,
    CommandContext,
    DefinitionError,
    Local,
    LocalResult,
    Outcome,
    Participant,
    Rejected,
    Reply,
    SagaApp,
    SagaContext,
    SagaDefinition,
    Step,
    Succeeded,
    start_saga,
)
from sagaway.application_loader import ApplicationNotFound, load_application
from sagaway.cli import app as cli
from sagaway.outbox.settings import DEFAULT_APP
from sagaway.services.order_app import order_app

pytestmark = pytest.mark.unit


class Ping(BaseModel):
    n: int


def _payload(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"n": data["n"]}


def _participant(name: str = "pinger", command: type[BaseModel] = Ping) -> Participant:
    participant = Participant(name)

    async def handle(session: AsyncSession, cmd: Any, ctx: CommandContext) -> Reply:
        return Succeeded(output={"pinged": True})

    participant.add(command, handle)
    return participant


def _saga(*steps: Step, name: str = "pings") -> SagaDefinition:
    return SagaDefinition(name=name, steps=steps)


def _ping_step(name: str = "ping", participant: str = "pinger", command: str = "Ping") -> Step:
    return Step(
        name=name, action=Action(participant=participant, command=command, payload=_payload)
    )


async def _local(session: AsyncSession, saga: SagaContext) -> LocalResult:
    return LocalResult(Outcome.SUCCEEDED)


def test_a_consistent_application_derives_queues_tables_and_messages() -> None:
    app = SagaApp(
        "pings",
        sagas=[_saga(_ping_step(), Step(name="done", action=Local(handler="pings.done")))],
        participants=[_participant()],
        local_steps={"pings.done": _local},
    )
    topology = app.topology(namespace="ns", queue_type="quorum", delivery_limit=5)
    assert [q.name for q in topology.queues] == ["ns.pinger", "ns.orchestrator"]
    assert set(app.outbox_tables) == {"orchestrator", "pinger"}
    assert app.outbox_tables["pinger"].schema == "pinger"
    assert app.replies["Ping"] == ("PingSucceeded", "PingRejected", "CommandFailed")
    assert app.command_models == {"Ping": Ping}
    assert set(app.reply_models) == {"PingSucceeded", "PingRejected", "CommandFailed"}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: SagaApp("a", sagas=[_saga(_ping_step(participant="nobody"))], participants=[]),
            "no participant named 'nobody'",
        ),
        (
            lambda: SagaApp(
                "a", sagas=[_saga(_ping_step(command="Pong"))], participants=[_participant()]
            ),
            "does not handle Pong",
        ),
        (
            lambda: SagaApp(
                "a",
                sagas=[_saga(Step(name="x", action=Local(handler="missing.step")))],
                participants=[],
            ),
            "no local step named 'missing.step'",
        ),
        (
            lambda: SagaApp(
                "a",
                sagas=[_saga(_ping_step()), _saga(_ping_step())],
                participants=[_participant()],
            ),
            "saga names repeated",
        ),
        (
            lambda: SagaApp(
                "a",
                sagas=[_saga(_ping_step())],
                participants=[_participant(), _participant()],
            ),
            "participant names repeated",
        ),
        (lambda: SagaApp("a", sagas=[], participants=[]), "has no saga"),
        (lambda: SagaApp("Not Snake", sagas=[], participants=[]), "snake_case"),
        (lambda: Participant("orchestrator"), "reserved"),
        (
            lambda: SagaApp(
                "a",
                sagas=[_saga(_ping_step(participant="ops"))],
                participants=[_participant("ops")],
            ),
            "are sagaway's own",
        ),
    ],
)
def test_an_inconsistent_application_is_refused_when_built(build: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        build()


def test_a_participant_handles_each_command_once() -> None:
    participant = _participant()
    with pytest.raises(DefinitionError, match="already handles Ping"):
        participant.add(Ping, participant.routes["Ping"].handler)


def test_the_default_application_is_the_order_application() -> None:
    assert load_application("sagaway.services.order_app:order_app") is order_app
    assert order_app.participant_names == ("inventory", "payment", "notification")
    assert list(order_app.definitions) == ["order_fulfillment"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
        ("sagaway.services.order_app:nothing", "has no attribute 'nothing'"),
        ("sagaway.services.order_app:seed_demo", "not a sagaway.SagaApp"),
        ("nocolon", "expected module:attribute"),
    ],
)
def test_a_bad_app_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ApplicationNotFound, match=message):
        load_application(spec)


@pytest.mark.parametrize(
    "command",
    [
        ["up"],
        ["api"],
        ["relay"],
        ["orchestrator"],
        ["backend"],
        ["worker", "inventory"],
        ["migrate"],
        ["seed"],
        ["asyncapi"],
        ["sagas", "list"],
        ["sagas", "check-definitions"],
        ["dead-letters"],
        ["outbox", "dead"],
    ],
    ids=" ".join,
)
def test_every_command_refuses_an_app_it_cannot_load(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # --app is handed to child processes through the environment: restore it after.
    monkeypatch.setenv("SAGAWAY_APP", DEFAULT_APP)
    result = CliRunner().invoke(cli, [*command, "--app", "no_such_module_xyz:app"])
    assert result.exit_code == 2, result.output
    assert "no module named 'no_such_module_xyz'" in result.output


def test_a_worker_for_a_participant_the_application_lacks_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGAWAY_APP", DEFAULT_APP)
    result = CliRunner().invoke(cli, ["worker", "shipping"])
    assert result.exit_code == 2
    assert "no participant 'shipping'" in result.output
    assert "inventory, payment, notification" in result.output


async def test_start_saga_refuses_an_unknown_type_and_data_that_is_not_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGAWAY_APP", DEFAULT_APP)
    session = cast(AsyncSession, object())  # never reached: the checks come first
    with pytest.raises(ValueError, match=r"has no saga 'trip_booking'.*order_fulfillment"):
        await start_saga(session, "trip_booking", {})
    with pytest.raises(ValueError, match="JSON values"):
        await start_saga(session, "order_fulfillment", {"when": object()}, app=order_app)


def test_an_answer_without_a_reply_type_takes_the_declared_model_of_its_outcome() -> None:
    class Pinged(BaseModel):
        outcome: Literal["succeeded"]

    class PingRefused(BaseModel):
        outcome: Literal["rejected"]
        reason: str

    participant = Participant("declared")

    async def handle(session: AsyncSession, cmd: Any, ctx: CommandContext) -> Reply:
        return Rejected("no")

    participant.add(Ping, handle, replies=(Pinged, PingRefused))
    route = participant.routes["Ping"]

    assert route.default_reply_type(Succeeded()) == "Pinged"
    assert route.default_reply_type(Rejected("no")) == "PingRefused"
    assert route.default_reply_type(Succeeded(reply_type="Pinged")) == "Pinged"
    # Undeclared routes keep the generated names.
    assert _participant().routes["Ping"].default_reply_type(Rejected("no")) == "PingRejected"
