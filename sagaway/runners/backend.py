"""``sagaway backend``: the relay, the orchestrator and every worker in one process.

On one small machine each hop of a saga (command, reply, next command) used to wake a
different Python process; here they share one event loop, so a burst of work costs one
wake-up instead of several, and the machine keeps fewer interpreters in memory. Each
component is the same code as when it runs alone, with its own connections, and any of
them can still be started on its own as N instances next to this process.
"""

from __future__ import annotations

import asyncio

from sagaway.outbox.settings import Settings
from sagaway.runners.lifecycle import stop_on_signals
from sagaway.runners.orchestrator import run_orchestrator
from sagaway.runners.relay import run_relay
from sagaway.runners.worker import run_worker
from sagaway.wiring import application


async def run_backend(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run every non-HTTP component until SIGTERM (or ``stop``); each finishes what it
    holds.

    ``SAGAWAY_METRICS_PORT`` serves the process's metrics (every component's, one
    registry) with the relay's readiness; the others share the process, so a probe of
    one is a probe of all.
    """
    stop = stop or stop_on_signals()
    quiet = settings.model_copy(update={"metrics_port": None})
    await asyncio.gather(
        run_relay(settings, stop=stop),
        run_orchestrator(quiet, stop=stop),
        *(run_worker(quiet, p, stop=stop) for p in application(settings).participant_names),
    )
