"""The end-of-run report of a saga bench: throughput, latency, outcomes. Pure text."""

from __future__ import annotations

from sagaway.bench.stats import LatencyStats, summarize
from sagaway.bench.workload import TERMINAL_STATUSES, BenchTally, WorkloadOptions


def format_report(tally: BenchTally, options: WorkloadOptions) -> str:
    """The end-of-run report, one fact per line.

    Args:
        tally: What the workers recorded (``wall_s`` included).
        options: What the run was asked to do.

    Returns:
        The report, without a trailing newline.
    """
    wall_s = tally.wall_s
    throughput = tally.finished / wall_s if wall_s > 0 else 0.0
    all_terminal = [ms for samples in tally.terminal_ms.values() for ms in samples]
    lines = [
        f"sagas: {options.sagas}  concurrency: {options.concurrency}  wall: {wall_s:.2f} s",
        f"throughput: {throughput:.1f} sagas/s (terminal sagas / wall time)",
        _stats_line("latency POST->terminal", summarize(all_terminal)),
    ]
    present = [s for s in TERMINAL_STATUSES if tally.terminal_ms.get(s)]
    if len(present) > 1:
        # Only worth a line each when outcomes mix: it shows what compensation costs.
        lines.extend(
            _stats_line(f"  {status} only", summarize(tally.terminal_ms[status]))
            for status in present
        )
    lines.append(_stats_line("latency POST alone", summarize(tally.post_ms), p95=False))
    http_total = sum(tally.http_errors.values())
    sagas = options.sagas
    counts = [_count(s, len(tally.terminal_ms.get(s, ())), sagas) for s in TERMINAL_STATUSES]
    counts += [_count("timeout", tally.timeouts, sagas), _count("http_errors", http_total, sagas)]
    lines.append("outcomes: " + "  ".join(counts))
    if options.reject_every:
        reason = "out_of_stock" if options.reject_kind == "stock" else "insufficient_funds"
        lines.append(f"rejected on purpose: every {options.reject_every}th order ({reason})")
    if http_total:
        detail = ", ".join(f"{key} x{n}" for key, n in sorted(tally.http_errors.items()))
        lines.append(f"http errors: {detail}")
    if tally.retries:
        detail = ", ".join(f"{key} x{n}" for key, n in sorted(tally.retries.items()))
        lines.append(f"retried after transport errors: {detail}")
    if tally.finished:
        how = (
            "long-poll wait_s"
            if options.long_poll
            else f"polled every {options.poll_interval_s * 1000:g} ms"
        )
        lines.append(
            f"polls: {tally.polls} ({tally.polls / tally.finished:.1f} per finished saga, {how})"
        )
    return "\n".join(lines)


def exit_code(tally: BenchTally) -> int:
    """0 when no saga timed out and no HTTP request failed, else 1."""
    return 1 if tally.timeouts or tally.http_errors else 0


def _stats_line(label: str, stats: LatencyStats | None, *, p95: bool = True) -> str:
    if stats is None:
        return f"{label} (ms): n/a (no samples)"
    middle = f"  p95 {stats.p95:.1f}" if p95 else ""
    return f"{label} (ms): p50 {stats.p50:.1f}{middle}  p99 {stats.p99:.1f}  max {stats.max:.1f}"


def _count(name: str, value: int, total: int) -> str:
    if value == 0 or total == 0:
        return f"{name} {value}"
    return f"{name} {value} ({100 * value / total:.1f}%)"
