"""``GET /asyncapi.json``: the message contracts, as ``sagaway asyncapi`` prints them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sagaway.services.api.asyncapi import build_asyncapi
from sagaway.services.api.dependencies import ApplicationDep, SettingsDep

router = APIRouter(tags=["contracts"])

_EXAMPLE: dict[str, Any] = {
    "asyncapi": "3.0.0",
    "info": {"title": "sagaway messaging", "version": "0.1.0"},
    "defaultContentType": "application/json",
    "channels": {
        "inventoryCommands": {
            "address": "inventory",
            "messages": {"ReserveInventory": {"$ref": "#/components/messages/ReserveInventory"}},
        }
    },
    "operations": {
        "sendReserveInventory": {
            "action": "send",
            "channel": {"$ref": "#/channels/inventoryCommands"},
            "messages": [{"$ref": "#/channels/inventoryCommands/messages/ReserveInventory"}],
        }
    },
    "components": {"messages": {"ReserveInventory": {"name": "ReserveInventory"}}},
}


@router.get(
    "/asyncapi.json",
    responses={
        200: {
            "description": "The AsyncAPI 3.0.0 document (abridged in this example).",
            "content": {"application/json": {"example": _EXAMPLE}},
        }
    },
)
async def get_asyncapi(settings: SettingsDep, app: ApplicationDep) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the commands and replies this installation exchanges
    over RabbitMQ: envelope and payload schemas, exchanges, queues and routing keys."""
    return build_asyncapi(settings, app)
