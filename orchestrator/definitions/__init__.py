"""The saga definitions sagaway runs."""

from sagaway.orchestrator.definitions.order_fulfillment import ORDER_FULFILLMENT
from sagaway.orchestrator.dsl import SagaDefinition

DEFINITIONS: dict[str, SagaDefinition] = {ORDER_FULFILLMENT.name: ORDER_FULFILLMENT}

__all__ = ["DEFINITIONS", "ORDER_FULFILLMENT"]
