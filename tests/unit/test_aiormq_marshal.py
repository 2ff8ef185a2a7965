"""The adapter's wire bytes are exactly what aiormq's own frame marshalling makes."""

from __future__ import annotations

from typing import Any

import pytest
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from sagaway.outbox.aiormq_adapter import PERSISTENT, Publication, _Marshaller

CHUNK = 1000


def publication(
    *, exchange: str = "ex", routing_key: str = "k", body: bytes = b"{}"
) -> Publication:
    return Publication(
        exchange=exchange,
        routing_key=routing_key,
        body=body,
        message_id="m-1",
        message_type="T",
        correlation_id="c-1",
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )


def aiormq_bytes(p: Publication, channel: int) -> bytes:
    frames: list[Any] = [
        Basic.Publish(exchange=p.exchange, routing_key=p.routing_key, mandatory=True),
        ContentHeader(
            properties=Basic.Properties(
                content_type="application/json",
                delivery_mode=PERSISTENT,
                message_id=p.message_id,
                correlation_id=p.correlation_id,
                message_type=p.message_type,
                headers=p.headers,
            ),
            body_size=len(p.body),
        ),
        *(ContentBody(p.body[i : i + CHUNK]) for i in range(0, len(p.body), CHUNK)),
    ]
    return ChannelFrame.marshall(channel_number=channel, frames=frames).payload


@pytest.mark.parametrize(
    "body", [b"", b"{}", bytes(range(256)) * 10], ids=["empty", "small", "3 frames"]
)
def test_a_message_is_marshalled_as_aiormq_would(body: bytes) -> None:
    marshal = _Marshaller(channel=7, chunk=CHUNK)
    p = publication(body=body)
    assert marshal(p) == aiormq_bytes(p, 7)
    # The second time its method frame comes from the cache, to the same bytes.
    assert marshal(p) == aiormq_bytes(p, 7)


def test_each_destination_gets_its_own_method_frame() -> None:
    marshal = _Marshaller(channel=3, chunk=CHUNK)
    for exchange, key in [("a", "x"), ("b", "x"), ("a", "y"), ("a", "x")]:
        p = publication(exchange=exchange, routing_key=key)
        assert marshal(p) == aiormq_bytes(p, 3)


def test_a_field_too_long_for_amqp_is_refused_and_not_cached() -> None:
    marshal = _Marshaller(channel=1, chunk=CHUNK)
    with pytest.raises(TypeError):
        marshal(publication(routing_key="k" * 256))
    with pytest.raises(TypeError):
        marshal(publication(routing_key="k" * 256))
