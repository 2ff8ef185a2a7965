"""sagaway: a saga orchestrator with a transactional outbox.

The public API of a saga application, everything a team needs to bring its own saga::

    from sagaway import (
        Action, CommandContext, Failed, Participant, Rejected, SagaApp,
        SagaDefinition, Step, Succeeded, start_saga,
    )

Sagas are defined with the typed DSL (:class:`SagaDefinition`, :class:`Step`,
:class:`Action`, :class:`Local`, :class:`RetryPolicy`); participants register one
handler per command (:class:`Participant`), each answering :class:`Succeeded`,
:class:`Rejected` or :class:`Failed`; a :class:`SagaApp` holds them all and is what
``sagaway --app module:attribute`` runs. :func:`start_saga` starts a saga in the
caller's transaction; :func:`saga_router` serves status and admin routes in a team's
own FastAPI app (with :func:`api_resources` in its lifespan), and a route of the
application uses :data:`SessionDep` (a session per request) and :data:`ApplicationDep`
(the running :class:`SagaApp`).
``sagaway.testing`` has the test kit.

The command line, the process supervisor and the runners live in this package too,
as the composition root; the domain lives in the subpackages ``orchestrator``,
``services`` and ``outbox``.
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

from sagaway.orchestrator.application import SagaApp
from sagaway.orchestrator.claims import claim_for_saga, set_saga_status
from sagaway.orchestrator.coordinator import LocalHandler, LocalResult, SagaContext
from sagaway.orchestrator.dsl import (
    Action,
    DefinitionError,
    Local,
    RetryPolicy,
    SagaDefinition,
    Step,
)
from sagaway.orchestrator.participants import (
    CommandContext,
    Failed,
    Participant,
    Rejected,
    Reply,
    Succeeded,
)
from sagaway.orchestrator.state import Outcome

# The web side (FastAPI, sagaway's routes) is imported when a name of it is first used:
# every process imports this package, and a relay or a worker has no use for it.
_LAZY = {
    "ApplicationDep": "sagaway.services.api.dependencies",
    "SessionDep": "sagaway.services.api.dependencies",
    "api_resources": "sagaway.services.api.app",
    "saga_router": "sagaway.services.api.router",
    "start_saga": "sagaway.starting",
}

if TYPE_CHECKING:
    from sagaway.services.api.app import api_resources
    from sagaway.services.api.dependencies import ApplicationDep, SessionDep
    from sagaway.services.api.router import saga_router
    from sagaway.starting import start_saga


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sagaway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Action",
    "ApplicationDep",
    "CommandContext",
    "DefinitionError",
    "Failed",
    "Local",
    "LocalHandler",
    "LocalResult",
    "Outcome",
    "Participant",
    "Rejected",
    "Reply",
    "RetryPolicy",
    "SagaApp",
    "SagaContext",
    "SagaDefinition",
    "SessionDep",
    "Step",
    "Succeeded",
    "__version__",
    "api_resources",
    "claim_for_saga",
    "saga_router",
    "set_saga_status",
    "start_saga",
]
