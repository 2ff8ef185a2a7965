"""What a long-running loop last found wrong with its dependencies, for ``/readyz``."""

from __future__ import annotations

import threading
import time


class Health:
    """Dependencies a loop found down, by name, with what went wrong and since when.

    Written by the loop (asyncio) and read by the probe server (a thread), hence the
    lock; a dependency is up again the first time the loop gets through to it.
    """

    def __init__(self) -> None:
        self._down: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def down(self, dependency: str, problem: str) -> None:
        with self._lock:
            since = self._down.get(dependency, (problem, time.time()))[1]
            self._down[dependency] = (problem, since)

    def up(self, dependency: str) -> None:
        with self._lock:
            self._down.pop(dependency, None)

    def problems(self) -> dict[str, str]:
        """Each dependency that is down: what went wrong and for how long."""
        now = time.time()
        with self._lock:
            return {
                name: f"{problem} (for {now - since:.0f}s)"
                for name, (problem, since) in sorted(self._down.items())
            }
