"""The message envelope's wire format, and URLs made fit for logs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from sagaway.outbox.envelope import Envelope
from sagaway.outbox.settings import redact_url


def _envelope() -> Envelope:
    return Envelope(
        message_type="ReserveInventory",
        saga_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        occurred_at=datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        payload={"order_id": str(uuid.uuid4()), "items": [{"sku": "SKU-1", "quantity": 2}]},
    )


def test_an_envelope_survives_the_round_trip_through_bytes() -> None:
    original = _envelope()

    body = original.to_bytes()
    parsed = Envelope.from_bytes(body)

    assert isinstance(body, bytes)
    assert parsed == original
    assert parsed.occurred_at == datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert parsed.to_bytes() == body


def test_the_wire_format_carries_every_contract_field() -> None:
    original = _envelope()

    fields = json.loads(original.to_bytes())

    assert set(fields) >= {
        "message_id",
        "message_type",
        "saga_id",
        "correlation_id",
        "causation_id",
        "occurred_at",
        "payload",
    }
    assert fields["message_id"] == str(original.message_id)
    assert fields["causation_id"] == str(original.causation_id)
    assert fields["payload"] == original.payload


def test_defaults_give_each_envelope_its_own_id_and_no_causation() -> None:
    saga_id, correlation_id = uuid.uuid4(), uuid.uuid4()

    first = Envelope(message_type="X", saga_id=saga_id, correlation_id=correlation_id)
    second = Envelope(message_type="X", saga_id=saga_id, correlation_id=correlation_id)

    assert first.message_id != second.message_id
    assert first.causation_id is None
    assert first.payload == {}
    assert first.occurred_at.tzinfo is not None
    assert Envelope.from_bytes(first.to_bytes()) == first


def test_unknown_fields_are_ignored_when_parsing() -> None:
    fields = json.loads(_envelope().to_bytes())

    parsed = Envelope.from_bytes(json.dumps({**fields, "extra": 1}).encode())

    assert parsed.message_id == uuid.UUID(fields["message_id"])


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"message_type": "X", "saga_id": "not-a-uuid", "correlation_id": "%s"}'
        % str(uuid.uuid4()).encode(),
        b'{"message_type": "", "saga_id": "%s", "correlation_id": "%s"}'
        % (str(uuid.uuid4()).encode(), str(uuid.uuid4()).encode()),
        b'{"message_type": "X", "saga_id": "%s"}' % str(uuid.uuid4()).encode(),
    ],
    ids=["empty", "not-json", "array", "no-fields", "bad-uuid", "empty-type", "no-correlation"],
)
def test_a_body_that_is_not_an_envelope_raises_a_validation_error(body: bytes) -> None:
    with pytest.raises(ValidationError):
        Envelope.from_bytes(body)


def test_an_envelope_is_immutable() -> None:
    envelope = _envelope()

    with pytest.raises(ValidationError):
        envelope.message_type = "Other"  # type: ignore[misc]


# ---------------------------------------------------------------- redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("amqp://svc:pa55word@rabbit/", "amqp://svc:***@rabbit/"),
        ("amqps://svc:s3cr3t@rabbit.example.com/vhost", "amqps://svc:***@rabbit.example.com/vhost"),
        (
            "postgresql+asyncpg://app:hunter2@db.internal:6432/sagaway",
            "postgresql+asyncpg://app:***@db.internal:6432/sagaway",
        ),
        (
            "postgresql+asyncpg://app:hunter2@db.internal/sagaway?ssl=require",
            "postgresql+asyncpg://app:***@db.internal/sagaway?ssl=require",
        ),
        ("postgresql://app:hunter2@[::1]:5432/sagaway", "postgresql://app:***@[::1]:5432/sagaway"),
    ],
)
def test_redact_url_hides_the_password(url: str, expected: str) -> None:
    redacted = redact_url(url)

    assert redacted == expected


def test_redact_url_hides_a_password_that_contains_an_at_sign() -> None:
    redacted = redact_url("amqp://user:p@ss:w0rd@rabbit:5672/")

    assert redacted == "amqp://user:***@rabbit:5672/"
    assert "w0rd" not in redacted


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:5432/sagaway",
        "postgresql+asyncpg://postgres@localhost/sagaway",
        "amqp://guest@127.0.0.1/",
        "amqp://rabbit.example.com:5672/",
    ],
)
def test_redact_url_leaves_a_url_without_password_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_hides_a_password_given_as_a_query_parameter() -> None:
    redacted = redact_url("postgresql+asyncpg://app@db.internal/sagaway?password=hunter2")

    assert "hunter2" not in redacted
