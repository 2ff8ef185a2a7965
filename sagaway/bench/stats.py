"""Exact latency statistics: nearest-rank percentiles over every recorded sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LatencyStats:
    """Exact summary of a set of latency samples, in milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float


def percentile(sorted_samples: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of already sorted samples.

    The result is always one of the samples: the smallest one such that at least
    ``pct`` percent of the samples are less than or equal to it.

    Args:
        sorted_samples: Samples in ascending order; at least one.
        pct: The percentile, in (0, 100].

    Returns:
        The sample of rank ``ceil(pct / 100 * n)``.

    Raises:
        ValueError: No samples, or ``pct`` out of range.
    """
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {pct}")
    # Integer arithmetic on micro-percent units: a float product such as 0.95 * 20 may land
    # a hair above the integer and push ceil() one rank too far.
    scaled = round(pct * 10_000)
    rank = max(1, -(-scaled * len(sorted_samples) // 1_000_000))
    return sorted_samples[rank - 1]


def summarize(samples: Sequence[float]) -> LatencyStats | None:
    """Summarize latency samples, or None when there are none.

    Args:
        samples: Latencies in milliseconds, in any order.

    Returns:
        The count, nearest-rank p50/p95/p99 and the maximum.
    """
    if not samples:
        return None
    ordered = sorted(samples)
    return LatencyStats(
        count=len(ordered),
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )
