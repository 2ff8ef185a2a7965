"""Prometheus metrics of the sagas themselves.

Observed by the coordinator when it writes a state change, inside the transaction: a
transaction that then rolls back (rare: a crash or lost connection) has been counted
once more than it took effect, and the redelivered message counts it again.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from sagaway.orchestrator.state import SagaState, StepStatus

SAGAS_STARTED = Counter("sagaway_sagas_started_total", "Sagas started.", ["saga_type"])
SAGAS_ENDED = Counter(
    "sagaway_sagas_ended_total",
    "Sagas that reached COMPLETED, COMPENSATED or FAILED.",
    ["saga_type", "status"],
)
STEP_SECONDS = Histogram(
    "sagaway_step_duration_seconds",
    "From a step's first attempt to its success or failure.",
    ["saga_type", "step", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RETRIES = Counter(
    "sagaway_step_retries_total",
    "Attempts beyond the first, of steps, compensations and epilogue actions.",
    ["saga_type", "step"],
)
COMPENSATIONS = Counter(
    "sagaway_compensations_total", "Steps whose effect was compensated.", ["saga_type", "step"]
)
REPLIES = Counter(
    "sagaway_replies_total",
    "Replies the orchestrator received, by what it did with them.",
    ["result"],  # applied, stale, unknown_saga
)

_TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


def observe_transition(saga_type: str, before: SagaState | None, after: SagaState) -> None:
    """Count what changed between two states of one saga."""
    if before is None:
        SAGAS_STARTED.labels(saga_type).inc()
    if after.status.value in _TERMINAL and (before is None or before.status != after.status):
        SAGAS_ENDED.labels(saga_type, after.status.value).inc()
    old_steps = before.steps if before is not None else ()
    for index, step in enumerate(after.steps):
        old = old_steps[index] if index < len(old_steps) else None
        if old is not None and old.status == step.status:
            continue
        if step.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
            if step.started_at is not None and step.finished_at is not None:
                STEP_SECONDS.labels(saga_type, step.name, step.status.value).observe(
                    (step.finished_at - step.started_at).total_seconds()
                )
        elif step.status is StepStatus.COMPENSATED:
            COMPENSATIONS.labels(saga_type, step.name).inc()
