"""``sagaway bench``: what sagaway (or a server with its HTTP surface) costs and delivers.

Imported only by ``sagaway bench``. The pieces a caller composes:

- :func:`run_workload` / :class:`Workload`: place orders over HTTP and wait for their
  sagas (long poll or polling); returns a :class:`BenchTally`.
- :class:`CostMeter` over :class:`MetricsSource` (``/metrics``) and :class:`CpuSampler`
  (``/proc``, by command name or pid): snapshots whose difference, per saga, is the
  cost block (:func:`cost_rows`, :func:`format_cost`).
- :func:`measure`: both together, as ``sagaway bench`` runs them.

``sagaway bench relay`` lives in :mod:`sagaway.bench.relay`, ``sagaway bench soak`` in
:mod:`sagaway.bench.soak`.
"""

from sagaway.bench.backends import DatabaseBackends
from sagaway.bench.cost import (
    BackendCost,
    CostRow,
    Snapshot,
    Usage,
    backend_cost,
    cost_rows,
    format_cost,
    usage_of,
)
from sagaway.bench.meter import CostMeter
from sagaway.bench.proc import CpuSampler, ProcStat, parse_stat
from sagaway.bench.report import exit_code, format_report
from sagaway.bench.saga import BenchOptions, BenchResult, measure, run_bench
from sagaway.bench.scrape import (
    MetricSamples,
    MetricsSource,
    default_sources,
    parse_metrics,
    parse_source,
)
from sagaway.bench.stats import LatencyStats, percentile, summarize
from sagaway.bench.workload import (
    BENCH_SKUS,
    REJECT_SKU,
    BenchSetupError,
    BenchTally,
    RejectKind,
    RunCustomers,
    Workload,
    WorkloadOptions,
    order_body,
    run_workload,
)

__all__ = [
    "BENCH_SKUS",
    "REJECT_SKU",
    "BackendCost",
    "BenchOptions",
    "BenchResult",
    "BenchSetupError",
    "BenchTally",
    "CostMeter",
    "CostRow",
    "CpuSampler",
    "DatabaseBackends",
    "LatencyStats",
    "MetricSamples",
    "MetricsSource",
    "ProcStat",
    "RejectKind",
    "RunCustomers",
    "Snapshot",
    "Usage",
    "Workload",
    "WorkloadOptions",
    "backend_cost",
    "cost_rows",
    "default_sources",
    "exit_code",
    "format_cost",
    "format_report",
    "measure",
    "order_body",
    "parse_metrics",
    "parse_source",
    "parse_stat",
    "percentile",
    "run_bench",
    "run_workload",
    "summarize",
    "usage_of",
]
