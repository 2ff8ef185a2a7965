"""sagaway: a saga orchestrator with a transactional outbox.

This package is the composition root: settings, logging, the command line and the
process supervisor. The domain lives in ``orchestrator``, ``services`` and ``outbox``.
"""

__version__ = "0.1.0"
