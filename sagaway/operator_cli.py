"""``sagaway sagas …`` and ``sagaway dead-letters``: the admin API's operations from a shell.

They talk to PostgreSQL (and RabbitMQ for dead letters) directly with the same code the
admin API runs, so an operator on the box needs no token; every action is audited with
the actor ``cli:<user>``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.cli_options import AppOption, application_or_exit, use_app
from sagaway.logging import configure_logging
from sagaway.orchestrator.coordinator import SagaCoordinator, SagaNotFound
from sagaway.orchestrator.history import HistoryRow
from sagaway.orchestrator.repository import SagaRecord
from sagaway.orchestrator.state import SagaStatus
from sagaway.orchestrator.state_machine import InvalidRequest
from sagaway.outbox.database import create_engine, session_factory
from sagaway.outbox.settings import Settings
from sagaway.services.ops.sagas import BadCursor, abort_saga, list_sagas, retry_saga
from sagaway.wiring import application, build_coordinator

sagas_app = typer.Typer(
    help="Inspect and repair sagas (list, show, retry, abort).", no_args_is_help=True
)

T = TypeVar("T")


def _run(work: Callable[[AsyncSession, SagaCoordinator], Awaitable[T]], app_spec: str | None) -> T:
    settings = _cli_settings(app_spec)

    async def main() -> T:
        db = create_engine(settings.database_url, pool_size=1)
        try:
            async with session_factory(db)() as session:
                return await work(session, build_coordinator(settings))
        finally:
            await db.dispose()

    return asyncio.run(main())


def _cli_settings(app_spec: str | None) -> Settings:
    use_app(app_spec)
    settings = Settings()
    configure_logging(level="WARNING", fmt=settings.log_format, component="cli")
    application_or_exit(settings)
    return settings


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


def _summary(record: SagaRecord) -> dict[str, Any]:
    state = record.state
    return {
        "saga_id": str(record.id),
        "saga_type": record.saga_type,
        "order_id": str(record.order_id) if record.order_id else None,
        "status": state.status.value,
        "current_step": state.current_step,
        "failure_reason": state.failure_reason,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "steps": [
            {
                "name": s.name,
                "status": s.status.value,
                "attempts": s.attempts,
                "error": s.error,
            }
            for s in state.steps
        ],
    }


@sagas_app.command("list")
def list_cmd(
    status: Annotated[
        SagaStatus | None, typer.Option(help="Only sagas in this status, e.g. FAILED.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    app_spec: AppOption = None,
) -> None:
    """List sagas newest first, one line each."""

    async def work(session: AsyncSession, coordinator: SagaCoordinator) -> None:
        try:
            page = await list_sagas(session, coordinator, status=status, limit=limit, cursor=cursor)
        except BadCursor:
            typer.echo("error: --cursor is not a cursor this command printed", err=True)
            raise typer.Exit(2) from None
        for r in page.items:
            s = r.state
            typer.echo(
                f"{r.id}  {s.status.value:<12} {s.current_step or '-':<18} "
                f"{r.created_at:%Y-%m-%d %H:%M:%S}  {s.failure_reason or ''}"
            )
        typer.echo(f"{len(page.items)} saga(s)", err=True)
        if page.next_cursor:
            typer.echo(f"more: --cursor {page.next_cursor}", err=True)

    _run(work, app_spec)


@sagas_app.command("check-definitions")
def check_definitions_cmd(app_spec: AppOption = None) -> None:
    """Check every unfinished saga against the application's current definitions: name
    those that cannot finish under them (a step they ran was removed or moved, their
    saga type is gone). Exit code 1 when there is one, 0 otherwise. `sagaway migrate`
    and the orchestrator run the same check at start and log what it finds."""
    from sagaway.orchestrator.definition_check import check_definitions

    async def work(session: AsyncSession, _: SagaCoordinator) -> int:
        report = await check_definitions(session, application(Settings()).definitions)
        typer.echo(report.render())
        return 0 if report.ok else 1

    raise typer.Exit(_run(work, app_spec))


@sagas_app.command("show")
def show_cmd(
    saga_id: Annotated[uuid.UUID, typer.Argument(help="The saga's id.")],
    app_spec: AppOption = None,
) -> None:
    """Show a saga, its steps and its whole history, as JSON."""

    async def work(session: AsyncSession, coordinator: SagaCoordinator) -> None:
        record = await coordinator.repository.get(session, saga_id)
        if record is None:
            typer.echo(f"error: no saga {saga_id}", err=True)
            raise typer.Exit(1)
        out = _summary(record)
        out["history"] = [
            _history_json(h) for h in await coordinator.repository.history(session, saga_id)
        ]
        typer.echo(json.dumps(out, indent=2))

    _run(work, app_spec)


_HISTORY_FIELDS = (
    *("attempt", "purpose", "outcome", "reason", "message_type", "participant"),
    *("handler", "message_id", "actor", "delay_s", "note"),
)


def _history_json(entry: HistoryRow) -> dict[str, Any]:
    """An entry as JSON: its sentence, then whichever typed fields it has."""
    out: dict[str, Any] = {
        "at": entry.at.isoformat(),
        "kind": entry.kind.value,
        "step": entry.step,
        "detail": entry.detail,
    }
    for name in _HISTORY_FIELDS:
        value = getattr(entry, name)
        if value is not None:
            out[name] = value if isinstance(value, int | float) else str(value)
    return out


def _act(
    saga_id: uuid.UUID,
    action: Callable[[AsyncSession, SagaCoordinator, uuid.UUID], Awaitable[Any]],
    verb: str,
    app_spec: str | None,
) -> None:
    async def work(session: AsyncSession, coordinator: SagaCoordinator) -> None:
        try:
            async with session.begin():
                state = await action(session, coordinator, saga_id)
        except SagaNotFound:
            typer.echo(f"error: no saga {saga_id}", err=True)
            raise typer.Exit(1) from None
        except InvalidRequest as exc:
            typer.echo(f"error: cannot {verb}: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"{saga_id} {state.status.value}")

    _run(work, app_spec)


@sagas_app.command("retry")
def retry_cmd(
    saga_id: Annotated[uuid.UUID, typer.Argument(help="A FAILED saga's id.")],
    app_spec: AppOption = None,
) -> None:
    """Resume a FAILED saga where it failed, with a fresh attempt budget."""
    _act(saga_id, lambda s, e, i: retry_saga(s, e, i, actor=_actor()), "retry", app_spec)


@sagas_app.command("abort")
def abort_cmd(
    saga_id: Annotated[uuid.UUID, typer.Argument(help="A FAILED saga's id.")],
    app_spec: AppOption = None,
) -> None:
    """Compensate a FAILED saga that has not passed its pivot; it ends COMPENSATED."""
    _act(saga_id, lambda s, e, i: abort_saga(s, e, i, actor=_actor()), "abort", app_spec)


def dead_letters_cmd(
    limit: Annotated[int, typer.Option(help="Messages shown per queue.", min=0, max=100)] = 20,
    app_spec: AppOption = None,
) -> None:
    """List dead-lettered messages per queue, with why they died (they stay queued)."""
    from sagaway.outbox.amqp import connect
    from sagaway.outbox.dead_letters import peek
    from sagaway.wiring import build_topology

    settings = _cli_settings(app_spec)
    topology = build_topology(settings)

    async def main() -> None:
        connection = await connect(settings.amqp_url, name="sagaway-cli")
        try:
            queues = await peek(
                connection,
                [topology.dead_letter_queue(q.name) for q in topology.queues],
                limit=limit,
            )
        finally:
            await connection.close()
        for q in queues:
            typer.echo(f"{q.queue}: {q.count} message(s)")
            for m in q.messages:
                typer.echo(
                    f"  {m.message_id}  {m.message_type or '-'}  reason={m.reason}"
                    f"  deliveries={m.deliveries}  {m.body[:120]}"
                )

    asyncio.run(main())


outbox_app = typer.Typer(help="Outbox messages the relay could not publish.", no_args_is_help=True)


@outbox_app.command("dead")
def outbox_dead_cmd(
    limit: Annotated[int, typer.Option(help="At most this many per outbox.", min=1)] = 100,
    app_spec: AppOption = None,
) -> None:
    """List outbox messages parked as dead, with their last error."""
    from sagaway.services.ops.outbox_admin import dead_rows

    async def work(session: AsyncSession, _: SagaCoordinator) -> None:
        rows = await dead_rows(session, application(Settings()).outbox_tables, limit=limit)
        for r in rows:
            typer.echo(
                f"{r.outbox:<13} {r.message_id}  saga {r.saga_id}  {r.message_type}"
                f"  attempts={r.attempts}  {r.last_error or ''}"
            )
        typer.echo(f"{len(rows)} dead message(s)", err=True)

    _run(work, app_spec)


@outbox_app.command("retry")
def outbox_retry_cmd(
    message_id: Annotated[uuid.UUID, typer.Argument(help="The dead message's id.")],
    app_spec: AppOption = None,
) -> None:
    """Give a dead outbox message a fresh attempt budget; the relay sends it again."""
    from sagaway.services.ops.audit import record_action
    from sagaway.services.ops.outbox_admin import requeue_dead

    async def work(session: AsyncSession, _: SagaCoordinator) -> None:
        async with session.begin():
            outbox = await requeue_dead(session, application(Settings()).outbox_tables, message_id)
            if outbox is None:
                typer.echo(f"error: no dead outbox message {message_id}", err=True)
                raise typer.Exit(1)
            await record_action(
                session,
                actor=_actor(),
                action="outbox.requeue",
                target=str(message_id),
                detail=outbox,
            )
        typer.echo(f"{message_id} requeued in the {outbox} outbox")

    _run(work, app_spec)
