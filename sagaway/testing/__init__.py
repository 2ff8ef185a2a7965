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

from sagaway.testing.harness import (
    DEFAULT_RETRY,
    HarnessError,
    LocalCall,
    LocalScript,
    SagaHarness,
    SentCommand,
)
from sagaway.testing.stack import SagaStack, StackError, running_stack

__all__ = [
    "DEFAULT_RETRY",
    "HarnessError",
    "LocalCall",
    "LocalScript",
    "SagaHarness",
    "SagaStack",
    "SentCommand",
    "StackError",
    "running_stack",
]
