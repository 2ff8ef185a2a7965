"""The AsyncAPI 3.0 document of sagaway's messaging, generated from the code.

Nothing here is written by hand that the code already knows: exchanges and queues come
from the application's topology for the installation's settings, which participant
handles a command from the saga definitions, payload schemas from the pydantic models
the application's participants register and ``outbox.envelope``, and the replies a
command may get from the same registrations. A unit test compares the result with those sources, so
the document cannot drift from what runs.

Model of the broker: a publisher sends to an exchange with a routing key (a
``routingKey`` channel); a consumer reads a queue bound to it (a ``queue`` channel).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.dsl import Action, SagaDefinition
from sagaway.orchestrator.participants import ORCHESTRATOR
from sagaway.outbox.amqp import QueueSpec, Topology
from sagaway.outbox.broker_nodes import node_address, virtual_host
from sagaway.outbox.envelope import Envelope
from sagaway.outbox.settings import Settings

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
CONTENT_TYPE = "application/json"
PERSISTENT = 2
"""AMQP delivery mode of every message sagaway publishes."""

SCHEMA_REF = "#/components/schemas/{model}"
"""Where pydantic's ``$ref``s point in the document (``model_json_schema(ref_template=)``)."""

ENVELOPE_SCHEMA = "Envelope"
AMQP_PROPERTIES_SCHEMA = "AmqpProperties"
CORRELATION_ID = "correlationId"
SERVER = "rabbitmq"
REPLIES_CHANNEL = "replies"
DEAD_LETTERS_CHANNEL = "deadLetters"


def build_asyncapi(settings: Settings, app: SagaApp) -> dict[str, Any]:
    """The AsyncAPI document of the application ``app`` installed as ``settings`` says.

    Args:
        app: the sagas and participants whose messages are described.
        settings: names (namespace), queue type and delivery limit come from here, and
            the broker's host and virtual host from its ``amqp_url`` (never credentials).

    Returns:
        A JSON-ready AsyncAPI 3.0.0 document.
    """
    topology = app.topology_for(settings)
    nodes = settings.amqp_nodes
    vhost = virtual_host(nodes[0])
    commands = _commands_by_participant(app.definitions.values())
    replies = tuple(app.reply_models)
    # What each consumer's queue carries: a participant's commands, or every reply.
    carried = {p: commands.get(p, ()) for p in app.participant_names} | {ORCHESTRATOR: replies}
    queue_of = {key: spec for spec in topology.queues for key in spec.routing_keys}
    messages = {name: _message(app, name, kind="command") for name in app.command_models}
    messages.update({name: _message(app, name, kind="reply") for name in replies})

    channels: dict[str, Any] = {}
    for consumer, names in carried.items():
        spec = queue_of[consumer]
        published = REPLIES_CHANNEL if consumer == ORCHESTRATOR else f"{consumer}Commands"
        summary = (
            "Replies to the orchestrator."
            if consumer == ORCHESTRATOR
            else f"Commands to {consumer}."
        )
        channels[published] = _routing_key_channel(
            spec, consumer, names, vhost=vhost, summary=summary
        )
        channels[_queue_channel_id(consumer)] = _queue_channel(
            topology, spec, names, vhost=vhost, summary=f"The queue {consumer} consumes."
        )
    channels.update(_dead_letter_channels(topology, queue_of, carried, vhost=vhost))

    operations: dict[str, Any] = {}
    operations.update(_orchestrator_operations(app, commands))
    for participant in app.participant_names:
        operations.update(_participant_operations(app, participant, commands.get(participant, ())))
    operations.update(_dead_letter_operations(carried))

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "sagaway messaging",
            "version": version("sagaway"),
            "description": (
                "Commands the saga orchestrator sends to its participants and the replies "
                "they send back, over RabbitMQ. Every message is a JSON envelope "
                f"({ENVELOPE_SCHEMA}) whose `payload` is the command or reply; its "
                "`message_id`, `correlation_id` and `message_type` are also set as the AMQP "
                "properties `message_id`, `correlation_id` and `type`. Messages are "
                "published persistently with publisher confirms from a transactional "
                "outbox; consumers deduplicate by `message_id`. A reply names the command "
                "attempt it answers in `causation_id`. A message a consumer cannot process "
                f"after {topology.delivery_limit} deliveries (or cannot parse at all) is "
                "dead-lettered."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": _servers(nodes),
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _schemas(app),
            "messages": messages,
            "correlationIds": {
                CORRELATION_ID: {
                    "description": "Ties every message of one business transaction "
                    "together: it comes from the request that started the saga (header "
                    "`X-Correlation-ID` of `POST /orders`). Also in the envelope.",
                    "location": "$message.header#/correlation_id",
                }
            },
        },
    }


def render_asyncapi(settings: Settings, app: SagaApp) -> str:
    """The document as indented JSON text (what ``sagaway asyncapi`` prints)."""
    return json.dumps(build_asyncapi(settings, app), indent=2, ensure_ascii=False) + "\n"


def _ref(pointer: str) -> dict[str, str]:
    return {"$ref": pointer}


def _channel_messages(channel: str, names: Iterable[str]) -> list[dict[str, str]]:
    return [_ref(f"#/channels/{channel}/messages/{name}") for name in names]


def _commands_by_participant(
    definitions: Iterable[SagaDefinition],
) -> dict[str, tuple[str, ...]]:
    """Participant → the command types the saga definitions send it, in first-use order
    (the application checked when it was built that each has a model)."""
    found: dict[str, list[str]] = {}
    for definition in definitions:
        for _, action in definition.actions():
            if isinstance(action, Action):
                names = found.setdefault(action.participant, [])
                if action.command not in names:
                    names.append(action.command)
    return {participant: tuple(names) for participant, names in found.items()}


def _schemas(app: SagaApp) -> dict[str, Any]:
    """Every payload schema, the envelope, and one envelope schema per message type."""
    schemas: dict[str, Any] = {}
    _add_model(schemas, ENVELOPE_SCHEMA, Envelope)
    schemas[AMQP_PROPERTIES_SCHEMA] = _amqp_properties()
    for name, model in (*app.command_models.items(), *app.reply_models.items()):
        _add_model(schemas, name, model)
        schemas[_envelope_schema_name(name)] = {
            "title": f"{name} envelope",
            "description": f"The envelope of a {name} message.",
            "allOf": [
                _ref(SCHEMA_REF.format(model=ENVELOPE_SCHEMA)),
                {
                    "type": "object",
                    "properties": {
                        "message_type": {"const": name},
                        "payload": _ref(SCHEMA_REF.format(model=name)),
                    },
                    "required": ["message_type", "payload"],
                },
            ],
        }
    return schemas


def _add_model(schemas: dict[str, Any], name: str, model: type[BaseModel]) -> None:
    """Add ``model``'s JSON Schema under ``name``, its ``$defs`` beside it."""
    schema = model.model_json_schema(ref_template=SCHEMA_REF)
    for def_name, definition in schema.pop("$defs", {}).items():
        _put(schemas, def_name, definition)
    _put(schemas, name, schema)


def _put(schemas: dict[str, Any], name: str, schema: Mapping[str, Any]) -> None:
    # Two models sharing a nested model name must mean the same model, or one
    # payload's $ref would silently describe the other's.
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two different schemas are both named {name!r}")
    schemas[name] = dict(schema)


def _envelope_schema_name(message: str) -> str:
    return f"{message}Envelope"


def _amqp_properties() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "AMQP basic properties set on every message (they repeat the "
        "envelope's fields so brokers and tools can route and trace without parsing it).",
        "properties": {
            "message_id": {
                "type": "string",
                "format": "uuid",
                "description": "The envelope's `message_id`.",
            },
            "correlation_id": {
                "type": "string",
                "format": "uuid",
                "description": "The envelope's `correlation_id`.",
            },
            "type": {"type": "string", "description": "The envelope's `message_type`."},
            "content_type": {"const": CONTENT_TYPE},
            "delivery_mode": {"const": PERSISTENT, "description": "2: persistent."},
        },
        "required": ["message_id", "correlation_id", "type", "content_type", "delivery_mode"],
    }


def _message(app: SagaApp, name: str, *, kind: str) -> dict[str, Any]:
    models = app.command_models if kind == "command" else app.reply_models
    doc = (models[name].__doc__ or name).strip()
    return {
        "name": name,
        "title": name,
        "summary": " ".join(doc.split("\n\n")[0].split()),
        "contentType": CONTENT_TYPE,
        "tags": [{"name": kind}],
        "headers": {
            "allOf": [
                _ref(SCHEMA_REF.format(model=AMQP_PROPERTIES_SCHEMA)),
                {"type": "object", "properties": {"type": {"const": name}}},
            ]
        },
        "correlationId": _ref(f"#/components/correlationIds/{CORRELATION_ID}"),
        "payload": _ref(SCHEMA_REF.format(model=_envelope_schema_name(name))),
        "bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP_BINDING_VERSION}},
    }


def _message_refs(names: Iterable[str]) -> dict[str, dict[str, str]]:
    return {name: _ref(f"#/components/messages/{name}") for name in names}


def _routing_key_channel(
    spec: QueueSpec, routing_key: str, names: Iterable[str], *, vhost: str, summary: str
) -> dict[str, Any]:
    return {
        "address": routing_key,
        "title": f"{spec.exchange} → {routing_key}",
        "summary": summary,
        "description": f"Published to the direct exchange `{spec.exchange}` with routing key "
        f"`{routing_key}`; the broker routes it to the queue `{spec.name}`.",
        "messages": _message_refs(names),
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": _exchange(spec.exchange, vhost=vhost),
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _queue_channel(
    topology: Topology, spec: QueueSpec, names: Iterable[str], *, vhost: str, summary: str
) -> dict[str, Any]:
    return {
        "address": spec.name,
        "title": spec.name,
        "summary": summary,
        "description": f"A durable {topology.queue_type} queue bound to `{spec.exchange}` by "
        f"{_keys(spec.routing_keys)}. What it gives up on goes to the dead-letter exchange "
        f"`{topology.dead_letter_exchange}` and from there to `"
        f"{topology.dead_letter_queue(spec.name)}`.",
        "messages": _message_refs(names),
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": _queue(spec.name, vhost=vhost),
                "bindingVersion": AMQP_BINDING_VERSION,
                "x-queue-type": topology.queue_type,
                "x-arguments": _queue_arguments(topology, spec),
                "x-bindings": [
                    {"exchange": spec.exchange, "routingKey": key} for key in spec.routing_keys
                ],
            }
        },
    }


def _dead_letter_channels(
    topology: Topology,
    queue_of: Mapping[str, QueueSpec],
    carried: Mapping[str, tuple[str, ...]],
    *,
    vhost: str,
) -> dict[str, Any]:
    dlx = topology.dead_letter_exchange
    channels: dict[str, Any] = {
        DEAD_LETTERS_CHANNEL: {
            "address": "{queue}",
            "title": f"{dlx} → {{queue}}",
            "summary": "Messages a queue gave up on.",
            "description": f"The broker republishes to the direct exchange `{dlx}`, with the "
            "source queue's name as routing key, a message its consumer refused on "
            "arrival (too large, not JSON, not an envelope, a NUL character, a type it has "
            "no handler for, a payload that does not fit) or that failed on every one of "
            "its deliveries.",
            "parameters": {
                "queue": {
                    "description": "The queue that dead-lettered the message.",
                    "enum": [queue_of[consumer].name for consumer in carried],
                }
            },
            "messages": _message_refs(_every(carried)),
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": _exchange(dlx, vhost=vhost),
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
    }
    for consumer, names in carried.items():
        source = queue_of[consumer].name
        dead = topology.dead_letter_queue(source)
        channels[_dead_letter_queue_channel_id(consumer)] = {
            "address": dead,
            "title": dead,
            "summary": f"What `{source}` dead-lettered.",
            "description": "Read (and left in place) by `sagaway dead-letters` and "
            "`GET /admin/dead-letters`.",
            "messages": _message_refs(names),
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": _queue(dead, vhost=vhost),
                    "bindingVersion": AMQP_BINDING_VERSION,
                    "x-queue-type": topology.queue_type,
                    "x-arguments": {"x-queue-type": topology.queue_type},
                    "x-bindings": [{"exchange": dlx, "routingKey": source}],
                }
            },
        }
    return channels


def _every(carried: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Every message type any queue carries, each once."""
    return tuple(dict.fromkeys(name for names in carried.values() for name in names))


def _queue_channel_id(consumer: str) -> str:
    return f"{consumer}Queue"


def _dead_letter_queue_channel_id(consumer: str) -> str:
    return f"{consumer}DeadLetterQueue"


def _orchestrator_operations(
    app: SagaApp, commands: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for participant in app.participant_names:
        channel = f"{participant}Commands"
        for name in commands.get(participant, ()):
            operations[f"send{name}"] = {
                "action": "send",
                "channel": _ref(f"#/channels/{channel}"),
                "title": f"Send {name}",
                "summary": f"The orchestrator asks {participant} to {_verb(name)}.",
                "description": "Written to the orchestrator's outbox in the transaction that "
                "changes the saga; the relay publishes it. A step attempt that gets no reply "
                "before its timeout is sent again as a new message.",
                "tags": [{"name": ORCHESTRATOR}],
                "messages": _channel_messages(channel, [name]),
                "reply": _reply(app, name),
                "bindings": {"amqp": _send_binding()},
            }
    operations["receiveReplies"] = {
        "action": "receive",
        "channel": _ref(f"#/channels/{_queue_channel_id(ORCHESTRATOR)}"),
        "title": "Receive replies",
        "summary": "The orchestrator applies each reply to its saga, once.",
        "tags": [{"name": ORCHESTRATOR}],
        "messages": _channel_messages(_queue_channel_id(ORCHESTRATOR), app.reply_models),
        "bindings": {"amqp": _receive_binding()},
    }
    return operations


def _participant_operations(
    app: SagaApp, participant: str, names: tuple[str, ...]
) -> dict[str, Any]:
    queue = _queue_channel_id(participant)
    operations: dict[str, Any] = {}
    for name in names:
        operations[f"handle{name}"] = {
            "action": "receive",
            "channel": _ref(f"#/channels/{queue}"),
            "title": f"Handle {name}",
            "summary": f"{participant.capitalize()} applies {name} once per message_id and "
            "writes its reply in the same transaction.",
            "tags": [{"name": participant}],
            "messages": _channel_messages(queue, [name]),
            "reply": _reply(app, name),
            "bindings": {"amqp": _receive_binding()},
        }
    replies = [r for name in names for r in app.replies[name]]
    operations[f"{participant}SendReplies"] = {
        "action": "send",
        "channel": _ref(f"#/channels/{REPLIES_CHANNEL}"),
        "title": f"{participant.capitalize()} replies",
        "summary": f"Replies of {participant} to the orchestrator, from its outbox.",
        "tags": [{"name": participant}],
        "messages": _channel_messages(REPLIES_CHANNEL, dict.fromkeys(replies)),
        "bindings": {"amqp": _send_binding()},
    }
    return operations


def _dead_letter_operations(carried: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    operations: dict[str, Any] = {
        "deadLetter": {
            "action": "send",
            "channel": _ref(f"#/channels/{DEAD_LETTERS_CHANNEL}"),
            "title": "Dead-letter",
            "summary": "The broker moves a message a consumer gave up on to the "
            "dead-letter exchange.",
            "tags": [{"name": "broker"}],
            "messages": _channel_messages(DEAD_LETTERS_CHANNEL, _every(carried)),
        }
    }
    for consumer, names in carried.items():
        channel = _dead_letter_queue_channel_id(consumer)
        operations[f"read{consumer.capitalize()}DeadLetters"] = {
            "action": "receive",
            "channel": _ref(f"#/channels/{channel}"),
            "title": f"Read {consumer} dead letters",
            "summary": "Operators inspect what failed; messages are put back untouched.",
            "tags": [{"name": "operator"}],
            "messages": _channel_messages(channel, names),
        }
    return operations


def _reply(app: SagaApp, command: str) -> dict[str, Any]:
    return {
        "channel": _ref(f"#/channels/{REPLIES_CHANNEL}"),
        "messages": _channel_messages(REPLIES_CHANNEL, app.replies[command]),
    }


def _send_binding() -> dict[str, Any]:
    return {"deliveryMode": PERSISTENT, "mandatory": True, "bindingVersion": AMQP_BINDING_VERSION}


def _receive_binding() -> dict[str, Any]:
    # Acknowledged only after the effect and the inbox row are committed.
    return {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}


def _exchange(name: str, *, vhost: str) -> dict[str, Any]:
    return {"name": name, "type": "direct", "durable": True, "autoDelete": False, "vhost": vhost}


def _queue(name: str, *, vhost: str) -> dict[str, Any]:
    return {"name": name, "durable": True, "exclusive": False, "autoDelete": False, "vhost": vhost}


def _queue_arguments(topology: Topology, spec: QueueSpec) -> dict[str, Any]:
    """The arguments ``outbox.amqp.declare`` declares ``spec`` with."""
    arguments: dict[str, Any] = {
        "x-queue-type": topology.queue_type,
        "x-dead-letter-exchange": topology.dead_letter_exchange,
        "x-dead-letter-routing-key": spec.name,
        **topology.extra_queue_arguments,
    }
    if topology.queue_type == "quorum":
        arguments["x-delivery-limit"] = topology.delivery_limit
    return arguments


def _keys(keys: Iterable[str]) -> str:
    return ", ".join(f"`{k}`" for k in keys)


def _verb(command: str) -> str:
    """``ReserveInventory`` → ``reserve inventory``."""
    words: list[str] = []
    for char in command:
        if char.isupper() and words:
            words.append(" ")
        words.append(char.lower())
    return "".join(words)


def _servers(nodes: tuple[str, ...]) -> dict[str, Any]:
    """Where the broker is, without credentials: ``rabbitmq``, or ``rabbitmq-1``... for
    each node of a cluster (a client may use any of them)."""
    if len(nodes) == 1:
        return {SERVER: _server(nodes[0], "The RabbitMQ broker of this installation")}
    return {
        f"{SERVER}-{i}": _server(url, f"Node {i} of the RabbitMQ cluster of this installation")
        for i, url in enumerate(nodes, start=1)
    }


def _server(url: str, what: str) -> dict[str, Any]:
    secure = urlsplit(url).scheme == "amqps"
    return {
        "host": node_address(url),
        "protocol": "amqps" if secure else "amqp",
        "pathname": "/" + virtual_host(url).lstrip("/"),
        "description": f"{what} (SAGAWAY_AMQP_URL).",
    }
