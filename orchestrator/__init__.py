"""The saga orchestrator: a typed DSL, a pure state machine, and the coordinator around it."""

from sagaway.orchestrator.dsl import Action, Local, RetryPolicy, SagaDefinition, Step

__all__ = ["Action", "Local", "RetryPolicy", "SagaDefinition", "Step"]
