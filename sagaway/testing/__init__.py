"""sagaway's test kit: test a saga of your own without writing a fake of sagaway.

* :class:`SagaHarness`: drives one saga through the real state machine with scripted
  replies and a clock the test moves. Pure and synchronous (no database, no broker):
  thousands of sagas a second, for every path of a definition.
* the ``saga_stack`` pytest fixture (:mod:`sagaway.testing.pytest_plugin`): the real
  stack (PostgreSQL, RabbitMQ, the relay, the orchestrator and every participant's
  worker) for one application, in a database and a broker namespace of its own.

Nothing in sagaway's runtime imports this package; pytest and pytest-asyncio, which
the fixture needs, come with the ``sagaway[testing]`` extra.
"""

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use: pytest loads this package's plugin in every run where sagaway
# is installed, and the stack pulls in the whole backend.
_LAZY = {
    "DEFAULT_RETRY": "sagaway.testing.harness",
    "HarnessError": "sagaway.testing.harness",
    "InvalidRequest": "sagaway.orchestrator.state_machine",
    "LocalCall": "sagaway.testing.harness",
    "LocalScript": "sagaway.testing.harness",
    "SagaHarness": "sagaway.testing.harness",
    "SentCommand": "sagaway.testing.harness",
    "SagaStack": "sagaway.testing.stack",
    "StackError": "sagaway.testing.stack",
    "running_stack": "sagaway.testing.stack",
}

if TYPE_CHECKING:
    from sagaway.orchestrator.state_machine import InvalidRequest
    from sagaway.testing.harness import (
        DEFAULT_RETRY,
        HarnessError,
        LocalCall,
        LocalScript,
        SagaHarness,
        SentCommand,
    )
    from sagaway.testing.stack import SagaStack, StackError, running_stack


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sagaway.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_RETRY",
    "HarnessError",
    "InvalidRequest",
    "LocalCall",
    "LocalScript",
    "SagaHarness",
    "SagaStack",
    "SentCommand",
    "StackError",
    "running_stack",
]
