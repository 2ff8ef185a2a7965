"""What a consumer refuses on arrival, judged by the message alone, and the screens of
the orchestrator and the participants that it runs."""

from __future__ import annotations

import json
import uuid

import pytest

from sagaway.outbox.admission import MAX_LOGGED_CHARS, Refusal, admit, clip
from sagaway.outbox.envelope import Envelope
from sagaway.outbox.errors import Unprocessable
from sagaway.outbox.settings import Settings
from sagaway.wiring import build_coordinator, build_dispatcher

SECRET = "s3cret-in-the-payload"
LIMIT = 4096


def _envelope(message_type: str = "ReserveInventory", **payload: object) -> Envelope:
    saga_id = uuid.uuid4()
    return Envelope(
        message_type=message_type, saga_id=saga_id, correlation_id=saga_id, payload=payload
    )


def _refusal(body: bytes, **options: object) -> Refusal:
    admitted = admit(body, max_bytes=LIMIT, **options)  # type: ignore[arg-type]
    assert isinstance(admitted, Refusal), admitted
    return admitted


def test_an_envelope_is_admitted_as_it_was_sent() -> None:
    sent = _envelope(order_id=str(uuid.uuid4()))
    assert admit(sent.to_bytes(), max_bytes=LIMIT) == sent


def test_a_body_over_the_limit_is_refused_by_its_length_before_any_parsing() -> None:
    # Not JSON either: had it been parsed, the reason would be not_json.
    refusal = _refusal(b"{" * (LIMIT + 1))
    assert refusal.reason == "too_large"
    assert refusal.detail == f"{LIMIT + 1} bytes, over the {LIMIT}-byte limit"
    assert admit(b"{" * LIMIT, max_bytes=LIMIT) != refusal


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe not utf-8",
        b"not json {",
        b'{"message_type": "X", "payload": {"s": "\\ud800"}}',  # a lone surrogate
        b"[" * 1000 + b"]" * 1000,  # deeper than the parser goes
    ],
)
def test_bytes_that_are_not_json_are_refused_as_such(body: bytes) -> None:
    assert _refusal(body).reason == "not_json"


@pytest.mark.parametrize(
    "document",
    [
        [1, 2],
        "an envelope",
        {},
        {"message_type": "X", "saga_id": "not a uuid", "correlation_id": str(uuid.uuid4())},
        {**_envelope().model_dump(mode="json"), "payload": [SECRET]},
        {**_envelope().model_dump(mode="json"), "message_type": SECRET * 20},
    ],
)
def test_json_that_is_not_an_envelope_is_refused_without_quoting_it(document: object) -> None:
    refusal = _refusal(json.dumps(document).encode())
    assert refusal.reason == "not_envelope"
    assert SECRET not in refusal.detail
    assert len(refusal.detail) <= 2 * MAX_LOGGED_CHARS


def test_text_postgresql_cannot_store_is_refused_wherever_it_hides() -> None:
    for payload in ({"a": "x\x00"}, {"a\x00": 1}, {"a": [{"b": ["\x00"]}]}):
        assert _refusal(_envelope(**payload).to_bytes()).reason == "nul_character"
    assert _refusal(_envelope("Bad\x00Type").to_bytes()).reason == "nul_character"
    # An escaped backslash before "u0000" is six ordinary characters, not a NUL.
    harmless = _envelope(note="\\u0000")
    assert b"\\\\u0000" in harmless.to_bytes()
    assert admit(harmless.to_bytes(), max_bytes=LIMIT) == harmless


def test_what_the_screen_refuses_is_refused_with_its_reason() -> None:
    def screen(envelope: Envelope) -> None:
        raise Unprocessable(f"no handler for {envelope.message_type}", reason="unknown_type")

    refusal = _refusal(_envelope("X" * 128).to_bytes(), screen=screen)
    assert refusal.reason == "unknown_type"
    assert len(refusal.detail) == MAX_LOGGED_CHARS and refusal.detail.endswith("…")


def test_clip_keeps_short_values_cuts_long_ones_and_escapes_control_characters() -> None:
    assert clip("short") == "short"
    assert clip(None) == "None"
    assert len(clip("x" * 10_000)) == MAX_LOGGED_CHARS
    assert clip("id\nlevel=error forged") == "id\\nlevel=error forged"
    assert clip("é") == "é"


def _reason(screen: object, envelope: Envelope) -> str:
    with pytest.raises(Unprocessable) as refused:
        screen(envelope)  # type: ignore[operator]
    return refused.value.reason


def test_a_participant_screens_out_what_it_has_no_handler_or_model_for() -> None:
    inventory = build_dispatcher("inventory", Settings())
    order_id = str(uuid.uuid4())
    inventory.screen(_envelope(order_id=order_id, items=[{"sku": "SKU-1", "quantity": 1}]))
    assert _reason(inventory.screen, _envelope("AuthorizePayment")) == "unknown_type"
    assert _reason(inventory.screen, _envelope("InventoryReserved")) == "unknown_type"
    assert _reason(inventory.screen, _envelope(order_id=order_id, items=[])) == "invalid_payload"


def test_the_orchestrator_screens_out_what_is_no_reply() -> None:
    coordinator = build_coordinator(Settings())
    coordinator.screen_reply(_envelope("InventoryReserved", outcome="succeeded"))
    assert _reason(
        coordinator.screen_reply, _envelope("ReserveInventory", outcome="succeeded")
    ) == ("unknown_type")
    assert _reason(coordinator.screen_reply, _envelope("InventoryReserved", outcome="maybe")) == (
        "invalid_payload"
    )
