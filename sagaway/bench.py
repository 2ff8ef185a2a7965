"""``sagaway bench``: drive a running installation over HTTP and measure it.

Each of ``concurrency`` workers places an order (``POST /orders``) and polls its saga
(``GET /sagas/{saga_id}``) until the saga reaches a terminal state, then takes the next
order. What is measured is what a client sees: the time from just before the POST to
the first poll that shows the terminal state, so the figures include the poll interval
(at most ``poll_interval_s`` too late) and the API's own latency.

The statistics are computed exactly from the recorded samples (nearest-rank
percentiles); the pure helpers (:func:`percentile`, :func:`summarize`,
:func:`format_report`, :func:`exit_code`, :func:`order_body`) hold no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx

TRANSPORT_ATTEMPTS = 3
TERMINAL_STATUSES = ("COMPLETED", "COMPENSATED", "FAILED")
BENCH_SKUS = tuple(f"BENCH-{n}" for n in range(1, 11))
# Stocked with zero units, so that an order for it is rejected with ``out_of_stock``.
REJECT_SKU = "BENCH-EMPTY"
UNIT_PRICE_CENTS = 100
PROGRESS_EVERY_S = 2.0


class BenchSetupError(Exception):
    """The system under test cannot be prepared (not ready, token refused, unreachable)."""


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What ``sagaway bench`` was asked to do.

    Attributes:
        url: Base URL of the running API.
        sagas: Number of orders (hence sagas) to place.
        concurrency: Number of workers, each with at most one saga in flight.
        admin_token: Bearer token for ``/admin/*``, needed to prepare stock and credit.
        timeout_s: How long one saga may take, POST included, before it counts as a timeout.
        reject_every: Every K-th order asks for stock that does not exist; 0 means never.
        poll_interval_s: Pause between two polls of one saga.
    """

    url: str
    sagas: int
    concurrency: int
    admin_token: str | None
    timeout_s: float
    reject_every: int
    poll_interval_s: float


@dataclass(frozen=True)
class LatencyStats:
    """Exact summary of a set of latency samples, in milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float


@dataclass
class BenchTally:
    """What the workers recorded; mutated only from the event loop's single thread.

    Attributes:
        post_ms: Latency of each answered ``POST /orders`` (202 or not).
        terminal_ms: POST-to-terminal latency of each finished saga, by terminal status.
        timeouts: Sagas that did not reach a terminal state within the timeout.
        http_errors: Sagas abandoned because of an HTTP error, keyed ``"<METHOD> <status>"``
            (or ``"<METHOD> <exception name>"`` when no answer came at all).
        polls: Number of ``GET /sagas/{id}`` requests sent.
        retries: Requests sent again after a transport error (the saga went on).
    """

    post_ms: list[float] = field(default_factory=list)
    terminal_ms: dict[str, list[float]] = field(default_factory=dict)
    timeouts: int = 0
    http_errors: Counter[str] = field(default_factory=Counter)
    polls: int = 0
    retries: Counter[str] = field(default_factory=Counter)

    @property
    def finished(self) -> int:
        """Sagas that reached a terminal state."""
        return sum(len(samples) for samples in self.terminal_ms.values())

    @property
    def done(self) -> int:
        """Sagas the bench is finished with, whatever the outcome."""
        return self.finished + self.timeouts + sum(self.http_errors.values())


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


def order_body(
    index: int, *, customer_id: str, reject_every: int, skus: Sequence[str] = BENCH_SKUS
) -> dict[str, object]:
    """The body of the ``index``-th (0-based) bench order.

    Orders spread round-robin over ``skus``, one unit each; when ``reject_every`` is K > 0,
    orders number K, 2K, ... (1-based) ask for :data:`REJECT_SKU`, which has no stock.

    Args:
        index: Position of the order in the run, from 0.
        customer_id: The run's customer.
        reject_every: K, or 0 for never.
        skus: The stocked bench SKUs.

    Returns:
        A JSON-ready ``POST /orders`` body.
    """
    rejected = reject_every > 0 and (index + 1) % reject_every == 0
    sku = REJECT_SKU if rejected else skus[index % len(skus)]
    return {
        "customer_id": customer_id,
        "items": [{"sku": sku, "quantity": 1, "unit_price_cents": UNIT_PRICE_CENTS}],
        "currency": "USD",
    }


def _stats_line(label: str, stats: LatencyStats | None, *, p95: bool = True) -> str:
    if stats is None:
        return f"{label} (ms): n/a (no samples)"
    middle = f"  p95 {stats.p95:.1f}" if p95 else ""
    return f"{label} (ms): p50 {stats.p50:.1f}{middle}  p99 {stats.p99:.1f}  max {stats.max:.1f}"


def _count(name: str, value: int, total: int) -> str:
    if value == 0 or total == 0:
        return f"{name} {value}"
    return f"{name} {value} ({100 * value / total:.1f}%)"


def format_report(tally: BenchTally, *, sagas: int, concurrency: int, wall_s: float) -> str:
    """The end-of-run report, one fact per line.

    Args:
        tally: What the workers recorded.
        sagas: Sagas the run was asked for.
        concurrency: Workers used.
        wall_s: Wall-clock seconds from the first POST to the last worker's end.

    Returns:
        The report, without a trailing newline.
    """
    throughput = tally.finished / wall_s if wall_s > 0 else 0.0
    all_terminal = [ms for samples in tally.terminal_ms.values() for ms in samples]
    lines = [
        f"sagas: {sagas}  concurrency: {concurrency}  wall: {wall_s:.2f} s",
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
    counts = [_count(s, len(tally.terminal_ms.get(s, ())), sagas) for s in TERMINAL_STATUSES]
    counts += [_count("timeout", tally.timeouts, sagas), _count("http_errors", http_total, sagas)]
    lines.append("outcomes: " + "  ".join(counts))
    if http_total:
        detail = ", ".join(f"{key} x{n}" for key, n in sorted(tally.http_errors.items()))
        lines.append(f"http errors: {detail}")
    if tally.retries:
        detail = ", ".join(f"{key} x{n}" for key, n in sorted(tally.retries.items()))
        lines.append(f"retried after transport errors: {detail}")
    if tally.finished:
        lines.append(f"polls: {tally.polls} ({tally.polls / tally.finished:.1f} per finished saga)")
    return "\n".join(lines)


def exit_code(tally: BenchTally) -> int:
    """0 when no saga timed out and no HTTP request failed, else 1."""
    return 1 if tally.timeouts or tally.http_errors else 0


def run_bench(options: BenchOptions) -> int:
    """Prepare stock and credit, run the benchmark, print the report.

    Progress goes to stderr every ~2 s; the report goes to stdout.

    Args:
        options: What to run.

    Returns:
        The process exit code: 0 clean, 1 timeouts or HTTP errors, 2 setup impossible.
    """
    if not options.admin_token:
        print(
            "bench: an admin token is needed to prepare bench stock and credit: "
            "pass --admin-token or set SAGAWAY_ADMIN_TOKEN",
            file=sys.stderr,
        )
        return 2
    try:
        tally, wall_s = asyncio.run(_bench(options, options.admin_token))
    except BenchSetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(format_report(tally, sagas=options.sagas, concurrency=options.concurrency, wall_s=wall_s))
    return exit_code(tally)


async def _bench(options: BenchOptions, token: str) -> tuple[BenchTally, float]:
    # Drop idle connections well before a server would (uvicorn: 5 s by default), so
    # a request never goes out on a connection the server is closing.
    limits = httpx.Limits(
        max_connections=options.concurrency,
        max_keepalive_connections=options.concurrency,
        keepalive_expiry=2.0,
    )
    # Requests get their own generous timeout; the saga deadline is enforced separately.
    timeout = httpx.Timeout(min(30.0, options.timeout_s))
    async with httpx.AsyncClient(base_url=options.url, limits=limits, timeout=timeout) as client:
        customer_id = await _prepare(client, options, token)
        tally = BenchTally()
        orders = iter(range(options.sagas))
        stop = asyncio.Event()
        started = time.perf_counter()
        progress = asyncio.create_task(_progress(tally, options.sagas, started, stop))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(options.concurrency, options.sagas)):
                    group.create_task(_worker(client, orders, customer_id, options, tally))
        finally:
            wall_s = time.perf_counter() - started
            stop.set()
            await progress
    return tally, wall_s


async def _prepare(client: httpx.AsyncClient, options: BenchOptions, token: str) -> str:
    """Check readiness, stock the bench SKUs and create the run's customer."""
    try:
        ready = await client.get("/readyz")
    except httpx.TransportError as exc:
        raise BenchSetupError(f"cannot reach {options.url}: {type(exc).__name__}") from exc
    if ready.status_code != 200:
        raise BenchSetupError(f"{options.url}/readyz answered {ready.status_code}: {ready.text}")
    headers = {"Authorization": f"Bearer {token}"}
    # Every bench SKU gets enough free units for the whole run on its own.
    stock = {sku: options.sagas for sku in BENCH_SKUS}
    if options.reject_every:
        stock[REJECT_SKU] = 0
    customer_id = f"bench-{secrets.token_hex(6)}"
    puts: list[tuple[str, dict[str, int]]] = [
        (f"/admin/inventory/{sku}", {"available": units}) for sku, units in stock.items()
    ]
    puts.append(
        (
            f"/admin/customers/{customer_id}",
            {"credit_limit_cents": 2 * options.sagas * UNIT_PRICE_CENTS},
        )
    )
    for path, body in puts:
        try:
            answer = await client.put(path, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise BenchSetupError(f"PUT {path} failed: {type(exc).__name__}") from exc
        if answer.status_code == 401:
            raise BenchSetupError("the admin token was refused (401): check --admin-token")
        if answer.status_code != 200:
            raise BenchSetupError(f"PUT {path} answered {answer.status_code}: {answer.text}")
    return customer_id


async def _worker(
    client: httpx.AsyncClient,
    orders: Iterator[int],
    customer_id: str,
    options: BenchOptions,
    tally: BenchTally,
) -> None:
    # Workers share one iterator; safe because next() never awaits.
    for index in orders:
        body = order_body(index, customer_id=customer_id, reject_every=options.reject_every)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(options.timeout_s):
                outcome = await _one_saga(client, body, options.poll_interval_s, tally, t0)
        except TimeoutError:
            tally.timeouts += 1
            continue
        if outcome is None:
            continue
        status, t1 = outcome
        tally.terminal_ms.setdefault(status, []).append((t1 - t0) * 1000)


async def _one_saga(
    client: httpx.AsyncClient,
    body: dict[str, object],
    poll_interval_s: float,
    tally: BenchTally,
    t0: float,
) -> tuple[str, float] | None:
    """Place one order and poll its saga; the terminal status and when it was seen.

    Returns None when an HTTP error ended the attempt (already recorded in ``tally``).
    """
    # Like a careful client, send an idempotency key and retry the POST when the
    # connection fails: the key makes the retry return the first order, never a second.
    headers = {"Idempotency-Key": f"bench-{uuid.uuid4()}"}
    for attempt in range(1, TRANSPORT_ATTEMPTS + 1):
        try:
            posted = await client.post("/orders", json=body, headers=headers)
            break
        except httpx.TransportError as exc:
            if attempt == TRANSPORT_ATTEMPTS:
                tally.http_errors[f"POST {type(exc).__name__}"] += 1
                return None
            tally.retries[f"POST {type(exc).__name__}"] += 1
    tally.post_ms.append((time.perf_counter() - t0) * 1000)
    if posted.status_code != 202:
        tally.http_errors[f"POST {posted.status_code}"] += 1
        return None
    saga_path = f"/sagas/{posted.json()['saga_id']}"
    while True:
        await asyncio.sleep(poll_interval_s)
        tally.polls += 1
        try:
            answer = await client.get(saga_path)
        except httpx.TransportError as exc:
            # A poll is safe to repeat: count it and poll again.
            tally.retries[f"GET {type(exc).__name__}"] += 1
            continue
        if answer.status_code != 200:
            tally.http_errors[f"GET {answer.status_code}"] += 1
            return None
        status = answer.json()["status"]
        if status in TERMINAL_STATUSES:
            return str(status), time.perf_counter()


async def _progress(tally: BenchTally, sagas: int, started: float, stop: asyncio.Event) -> None:
    last_done, last_at = 0, started
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PROGRESS_EVERY_S)
        now = time.perf_counter()
        done = tally.done
        rate = (done - last_done) / (now - last_at) if now > last_at else 0.0
        print(
            f"[{now - started:6.1f}s] done {done}/{sagas}  current {rate:.1f} sagas/s",
            file=sys.stderr,
            flush=True,
        )
        last_done, last_at = done, now
