"""History entries are data; sentences are rendered from them (orchestrator/history.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from sagaway.orchestrator.dsl import RetryPolicy
from sagaway.orchestrator.history import HistoryEntry, HistoryKind, HistoryRow, Purpose, describe
from sagaway.orchestrator.state import Outcome
from sagaway.orchestrator.state_machine import (
    LocalCompleted,
    ReplyReceived,
    RetryRequested,
    SagaMachine,
    Transition,
    WokeUp,
)
from sagaway.services.api.schemas import HistoryItem
from sagaway.services.orders.saga import ORDER_FULFILLMENT
from tests.history_samples import SAMPLES

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEFAULTS = RetryPolicy(max_attempts=2, initial_interval_s=0.5, max_interval_s=30, timeout_s=5)


@pytest.mark.parametrize(
    ("sentence", "entry"), [(s[3], s[4]) for s in SAMPLES], ids=[s[3][:40] for s in SAMPLES]
)
def test_an_entry_renders_as_the_sentence_history_used_to_store(
    sentence: str, entry: HistoryEntry
) -> None:
    assert describe(entry) == sentence
    assert entry.detail == sentence


def test_a_note_is_shown_as_it_is_whatever_the_kind() -> None:
    entry = HistoryEntry(kind=HistoryKind.COMMAND_SENT, note="written by hand")

    assert entry.detail == "written by hand"


def test_an_entry_the_engine_refused_says_why() -> None:
    entry = HistoryEntry(kind=HistoryKind.DEFINITION_REFUSED, reason="step x was removed")

    assert entry.detail == "not driven: step x was removed"


def test_the_api_item_carries_the_fields_and_the_sentence() -> None:
    row = HistoryRow(
        at=NOW,
        kind=HistoryKind.COMMAND_SENT,
        step="authorize_payment",
        attempt=2,
        purpose=Purpose.ACTION,
        message_type="AuthorizePayment",
        participant="payment",
        message_id=uuid.UUID(int=7),
    )

    item = HistoryItem.of(row).model_dump(mode="json")

    assert item["kind"] == "command_sent"
    assert item["detail"] == "AuthorizePayment to payment (action, attempt 2)"
    assert (item["purpose"], item["attempt"], item["participant"]) == ("action", 2, "payment")
    assert item["message_id"] == str(uuid.UUID(int=7))
    assert item["reason"] is None and item["note"] is None


# ---------------------------------------------------------------- the machine's entries


def _reply(
    machine: SagaMachine, t: Transition, outcome: Outcome, reason: str | None = None
) -> Transition:
    return machine.apply(
        t.state,
        ReplyReceived(
            now=NOW,
            next_message_id=uuid.uuid4(),
            causation_id=t.state.pending,
            outcome=outcome,
            reason=reason,
        ),
    )


def test_the_machine_records_a_timeout_as_a_typed_failed_attempt() -> None:
    machine = SagaMachine(ORDER_FULFILLMENT, DEFAULTS)
    started = machine.start(now=NOW, next_message_id=uuid.uuid4())

    timed_out = machine.apply(
        started.state, WokeUp(now=NOW + timedelta(seconds=6), next_message_id=uuid.uuid4())
    )

    failed, scheduled = timed_out.notes
    assert failed == HistoryEntry(
        kind=HistoryKind.ATTEMPT_FAILED,
        step="reserve_inventory",
        purpose=Purpose.ACTION,
        attempt=1,
        outcome="timeout",
        reason="no reply within 5s",
    )
    assert scheduled.kind is HistoryKind.RETRY_SCHEDULED and scheduled.delay_s == 0.5
    assert [n.detail for n in timed_out.notes] == [
        "reserve_inventory attempt 1 failed: no reply within 5s",
        "retrying in 0.5s",
    ]
    retried = machine.apply(
        timed_out.state, WokeUp(now=NOW + timedelta(seconds=7), next_message_id=uuid.uuid4())
    )
    assert [(n.kind, n.attempt) for n in retried.notes] == [(HistoryKind.RETRY_STARTED, 2)]


def test_the_machine_names_the_step_a_move_is_about() -> None:
    machine = SagaMachine(ORDER_FULFILLMENT, DEFAULTS)
    started = machine.start(now=NOW, next_message_id=uuid.uuid4())
    assert [n.kind for n in started.notes] == [HistoryKind.SAGA_STARTED]

    reserved = _reply(machine, started, Outcome.SUCCEEDED)
    rejected = _reply(machine, reserved, Outcome.REJECTED, "insufficient_funds")
    released = _reply(machine, rejected, Outcome.SUCCEEDED)

    assert reserved.notes == (
        HistoryEntry(kind=HistoryKind.STEP_SUCCEEDED, step="reserve_inventory"),
    )
    assert rejected.notes == (
        HistoryEntry(
            kind=HistoryKind.STEP_REJECTED, step="authorize_payment", reason="insufficient_funds"
        ),
    )
    assert released.notes == (
        HistoryEntry(kind=HistoryKind.STEP_COMPENSATED, step="reserve_inventory"),
    )
    # The epilogue's local step, then its notification, then the end.
    rejected_order = machine.apply(
        released.state,
        LocalCompleted(now=NOW, next_message_id=uuid.uuid4(), outcome=Outcome.SUCCEEDED),
    )
    [done] = rejected_order.notes
    assert (done.kind, done.purpose, done.handler) == (
        HistoryKind.EPILOGUE_DONE,
        Purpose.EPILOGUE,
        "orders.reject",
    )
    ended = _reply(machine, rejected_order, Outcome.SUCCEEDED)
    assert ended.notes[-1] == HistoryEntry(kind=HistoryKind.SAGA_ENDED, outcome="COMPENSATED")
    assert [n.detail for n in ended.notes] == ["NotifyCustomer done", "saga COMPENSATED"]


def test_an_operator_retry_is_a_typed_resumption() -> None:
    machine = SagaMachine(
        ORDER_FULFILLMENT,
        RetryPolicy(max_attempts=1, initial_interval_s=1, max_interval_s=1, timeout_s=5),
    )
    started = machine.start(now=NOW, next_message_id=uuid.uuid4())
    failed = _reply(machine, started, Outcome.FAILED, "boom")
    assert failed.notes[-1] == HistoryEntry(
        kind=HistoryKind.SAGA_ENDED,
        outcome="FAILED",
        reason="reserve_inventory failed after 1 attempts: boom",
    )

    resumed = machine.apply(failed.state, RetryRequested(now=NOW, next_message_id=uuid.uuid4()))

    [note] = resumed.notes
    assert (note.kind, note.step) == (HistoryKind.SAGA_RESUMED, "reserve_inventory")
    assert note.detail == "operator retry: fresh attempt budget"
