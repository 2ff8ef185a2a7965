"""What a consumer checks of a delivery before it spends a transaction on it.

A body that is too large, not JSON, not an envelope, holds text PostgreSQL cannot
store, or that the handler's screen refuses (an unknown type, a payload that does not
fit) can never be applied, however often it is delivered. Finding that out needs no
database, so it is done on arrival: such a message is dead-lettered at once, before the
batch it came in is formed, and its neighbours never notice it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sagaway.outbox.envelope import Envelope
from sagaway.outbox.errors import Unprocessable

Screen = Callable[[Envelope], None]
"""Raises :class:`~sagaway.outbox.errors.Unprocessable` when a message can never be applied,
judging by the message alone (no I/O: it runs outside any transaction)."""

# How much of any one value a log line about a refused message may carry: its id,
# type and the place of the first error are attacker-controlled text.
MAX_LOGGED_CHARS = 80


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a delivery is dead-lettered on arrival: a metric label and a short detail."""

    reason: str
    detail: str


def admit(body: bytes, *, max_bytes: int, screen: Screen | None = None) -> Envelope | Refusal:
    """The envelope of ``body``, or why it can never be applied.

    The size is checked before anything reads the body, so an oversized message costs
    a length and not a parse.
    """
    if len(body) > max_bytes:
        return Refusal("too_large", f"{len(body)} bytes, over the {max_bytes}-byte limit")
    try:
        envelope = Envelope.from_bytes(body)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False, include_context=False)
        reason = "not_json" if errors[0]["type"] == "json_invalid" else "not_envelope"
        return Refusal(reason, f"{exc.error_count()} errors, first: {_first(errors[0])}")
    # JSON can only spell NUL as an escape; PostgreSQL text and jsonb cannot hold it,
    # so such a message would fail in the handler's transaction on every delivery.
    if b"\\u0000" in body and _holds_nul(envelope.message_type, envelope.payload):
        return Refusal("nul_character", "a string holds U+0000")
    if screen is not None:
        try:
            screen(envelope)
        except Unprocessable as exc:
            return Refusal(exc.reason, clip(str(exc)))
    return envelope


def clip(value: object) -> str:
    """``value`` as text for a log line: control characters escaped (a forged line
    break must not start a forged log line), at most ``MAX_LOGGED_CHARS`` long."""
    text = str(value)[: MAX_LOGGED_CHARS * 4]
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= MAX_LOGGED_CHARS else text[: MAX_LOGGED_CHARS - 1] + "…"


def _first(error: Any) -> str:
    # Type and place only: pydantic's message and input may quote the payload.
    place = ".".join(str(part) for part in error["loc"]) or "body"
    return clip(f"{error['type']} at {place}")


def _holds_nul(*values: object) -> bool:
    pending = list(values)
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False
