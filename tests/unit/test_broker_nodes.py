"""``SAGAWAY_AMQP_URL`` as one node or the nodes of a cluster: read, checked, redacted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from sagaway.metrics_server import ReadyState, _app
from sagaway.outbox.broker_nodes import InvalidBrokerUrl, node_address, parse_nodes, virtual_host
from sagaway.outbox.settings import Settings, redact_url
from sagaway.services.api.asyncapi import build_asyncapi
from sagaway.services.order_app import order_app

THREE = (
    "amqp://app:s3cret@10.0.0.1:5672/shop, amqp://app:s3cret@10.0.0.2/shop,"
    "amqps://app:s3cret@[fd00::3]:5671/shop"
)


def test_one_url_is_one_node() -> None:
    assert parse_nodes("amqp://guest:guest@127.0.0.1:5672/") == (
        "amqp://guest:guest@127.0.0.1:5672/",
    )


def test_several_urls_are_the_nodes_in_their_order_without_the_spaces() -> None:
    nodes = parse_nodes(THREE)
    assert [node_address(n) for n in nodes] == ["10.0.0.1:5672", "10.0.0.2:5672", "[fd00::3]:5671"]
    assert {virtual_host(n) for n in nodes} == {"shop"}
    assert virtual_host("amqp://h") == virtual_host("amqp://h/") == "/"
    assert virtual_host("amqp://h/%2Fvh") == "/vh"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "the URL is empty"),
        ("amqp://a:1/,", "URL 2 of 2 is empty (a stray comma?)"),
        ("amqp://u:pw@a:1/,http://u:pw@b:2/", "URL 2 of 2 is not an amqp:// or amqps:// URL"),
        ("guest:pw@a:5672", "is not an amqp:// or amqps:// URL"),
        ("amqp://u:pw@a:99999/", "the URL has an invalid host or port"),
        ("amqp://u:pw@a:port/", "the URL has an invalid host or port"),
        ("amqp:///vhost", "the URL names no host"),
        ("amqp://u:pw@a:5672/,amqp://u:pw@a/", "URL 2 of 2 names a:5672 again"),
        ("amqp://u:pw@a/x,amqp://u:pw@b/y", "different virtual hosts (x, y)"),
    ],
)
def test_a_bad_value_is_refused_naming_the_url_without_its_password(value: str, says: str) -> None:
    with pytest.raises(InvalidBrokerUrl) as refused:
        parse_nodes(value)
    assert says in str(refused.value)
    assert "pw" not in str(refused.value)


def test_settings_refuse_a_bad_url_at_start_and_never_echo_it() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(amqp_url="amqp://app:s3cret@a:5672/,amqp://app:s3cret@b:bad/")
    text = str(refused.value)
    assert "URL 2 of 2 has an invalid host or port" in text
    assert "s3cret" not in text


def test_settings_hold_the_nodes_and_logs_see_every_password_hidden() -> None:
    settings = Settings(amqp_url=THREE)
    assert len(settings.amqp_nodes) == 3
    shown = redact_url(settings.amqp_url)
    assert "s3cret" not in shown
    assert shown.count("app:***@") == 3, shown


def test_asyncapi_names_each_node_of_a_cluster_as_a_server_without_credentials() -> None:
    doc = build_asyncapi(Settings(amqp_url=THREE, namespace="docs-test"), order_app)
    assert "s3cret" not in json.dumps(doc)
    servers = doc["servers"]
    assert [s["host"] for s in servers.values()] == [
        "10.0.0.1:5672",
        "10.0.0.2:5672",
        "[fd00::3]:5671",
    ]
    assert list(servers) == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    assert servers["rabbitmq-3"]["protocol"] == "amqps"
    assert {s["pathname"] for s in servers.values()} == {"/shop"}


def _readyz(state: ReadyState) -> tuple[str, dict[str, Any]]:
    answered: list[str] = []
    body = b"".join(
        _app(lambda: state)({"PATH_INFO": "/readyz"}, lambda status, _: answered.append(status))
    )
    return answered[0], json.loads(body)


def test_a_component_readyz_names_the_node_it_is_on() -> None:
    assert _readyz(ReadyState(problems={}, rabbitmq_node="127.0.0.1:5673")) == (
        "200 OK",
        {"status": "ready", "rabbitmq_node": "127.0.0.1:5673"},
    )
    status, body = _readyz(
        ReadyState(problems={"rabbitmq": "connection lost, reconnecting"}, rabbitmq_node=None)
    )
    assert status.startswith("503")
    assert body == {
        "status": "not ready",
        "detail": "rabbitmq: connection lost, reconnecting",
        "rabbitmq": "down",
        "rabbitmq_node": None,
    }
