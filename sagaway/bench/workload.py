"""Drive a server with sagaway's HTTP surface: place orders and wait for their sagas.

Each of ``concurrency`` workers places an order (``POST /orders``) and waits for its saga
(``GET /sagas/{saga_id}``) to reach a terminal state, then takes the next order. What is
measured is what a client sees: the time from just before the POST to the answer that
shows the terminal state.

Waiting is a long poll by default (``GET /sagas/{id}?wait_s=N``, answered as soon as the
saga ends); ``long_poll=False`` polls every ``poll_interval_s`` instead, for servers
without ``wait_s`` (the figures then include up to one interval of delay).

Only the HTTP surface is used (``GET /readyz``, ``PUT /admin/inventory/{sku}``,
``PUT /admin/customers/{id}``, ``POST /orders``, ``GET /sagas/{id}`` answering
``{"status": ...}``), so the same workload drives any server that offers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, TextIO

import aiohttp

TRANSPORT_ATTEMPTS = 3
# What a request raises when no answer came: a connection refused or dropped, a
# truncated body, a timeout (aiohttp's own timeouts derive from TimeoutError).
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
JSON_HEADERS = {"Content-Type": "application/json"}
TERMINAL_STATUSES = ("COMPLETED", "COMPENSATED", "FAILED")
BENCH_SKUS = tuple(f"BENCH-{n}" for n in range(1, 11))
# Stocked with zero units, so that an order for it is rejected with ``out_of_stock``.
REJECT_SKU = "BENCH-EMPTY"
UNIT_PRICE_CENTS = 100
PROGRESS_EVERY_S = 2.0
MAX_WAIT_S = 30
# How much longer than the long poll's own wait an HTTP request may take.
WAIT_SLACK_S = 10.0

RejectKind = Literal["stock", "credit"]
"""How the every-K-th order is rejected: ``stock`` asks for :data:`REJECT_SKU` (the saga
is rejected by its first step), ``credit`` places it for a customer with no credit
(rejected by payment after the reservation: compensated by a release)."""


class BenchSetupError(Exception):
    """The system under test cannot be prepared (not ready, token refused, unreachable)."""


@dataclass(frozen=True, kw_only=True)
class WorkloadOptions:
    """What a bench run does.

    Attributes:
        sagas: Number of orders (hence sagas) to place.
        concurrency: Number of workers, each with at most one saga in flight.
        admin_token: Bearer token for ``/admin/*``, to stock the SKUs and create the
            customers; None sends no ``Authorization`` header.
        timeout_s: How long one saga may take, POST included, before it counts as a timeout.
        reject_every: Every K-th order is rejected (see ``reject_kind``); 0 means never.
        reject_kind: ``stock`` or ``credit``, see :data:`RejectKind`.
        long_poll: Wait with ``GET /sagas/{id}?wait_s=N``; False polls instead.
        poll_interval_s: Pause between two polls of one saga when not long-polling.
    """

    sagas: int
    concurrency: int
    admin_token: str | None
    timeout_s: float = 120.0
    reject_every: int = 0
    reject_kind: RejectKind = "stock"
    long_poll: bool = True
    poll_interval_s: float = 0.02


@dataclass
class BenchTally:
    """What the workers recorded; mutated only from the event loop's single thread.

    Attributes:
        post_ms: Latency of each answered ``POST /orders`` (202 or not).
        terminal_ms: POST-to-terminal latency of each finished saga, by terminal status.
        timeouts: Sagas that did not reach a terminal state within the timeout.
        http_errors: Sagas abandoned because of an HTTP error, keyed ``"<METHOD> <status>"``
            (or ``"<METHOD> <exception name>"`` when no answer came at all).
        polls: Number of ``GET /sagas/{id}`` requests sent (long polls included).
        retries: Requests sent again after a transport error (the saga went on).
        wall_s: Wall-clock seconds from the first POST to the last worker's end.
    """

    post_ms: list[float] = field(default_factory=list)
    terminal_ms: dict[str, list[float]] = field(default_factory=dict)
    timeouts: int = 0
    http_errors: Counter[str] = field(default_factory=Counter)
    polls: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    @property
    def finished(self) -> int:
        """Sagas that reached a terminal state."""
        return sum(len(samples) for samples in self.terminal_ms.values())

    @property
    def done(self) -> int:
        """Sagas the bench is finished with, whatever the outcome."""
        return self.finished + self.timeouts + sum(self.http_errors.values())


@dataclass(frozen=True)
class SagaOutcome:
    """How one saga of a run ended, as the client saw it.

    Attributes:
        status: The terminal status, ``timeout`` or ``http_error``.
        latency_ms: From the order's start to the answer showing the end (to the
            deadline for a timeout); None for an HTTP error.
    """

    status: str
    latency_ms: float | None


@dataclass(frozen=True)
class RunCustomers:
    """The customers of one run: one with credit for every order, one with none."""

    funded: str
    penniless: str


@dataclass(frozen=True)
class RunScope:
    """What one run touched: the SKUs it stocked (with the units it set) and its
    customers; the saga invariants of the run are checked over these."""

    stock_totals: dict[str, int]
    customers: tuple[str, ...]


def order_body(
    index: int,
    *,
    customers: RunCustomers,
    reject_every: int,
    reject_kind: RejectKind = "stock",
    skus: Sequence[str] = BENCH_SKUS,
) -> dict[str, object]:
    """The body of the ``index``-th (0-based) bench order.

    Orders spread round-robin over ``skus``, one unit each, for the funded customer. When
    ``reject_every`` is K > 0, orders number K, 2K, ... (1-based) are meant to be rejected:
    for ``stock`` they ask for :data:`REJECT_SKU`, which has no stock; for ``credit`` they
    are the penniless customer's, for a stocked SKU.

    Args:
        index: Position of the order in the run, from 0.
        customers: The run's customers.
        reject_every: K, or 0 for never.
        reject_kind: How the K-th orders are rejected.
        skus: The stocked bench SKUs.

    Returns:
        A JSON-ready ``POST /orders`` body.
    """
    rejected = reject_every > 0 and (index + 1) % reject_every == 0
    sku = skus[index % len(skus)]
    customer = customers.funded
    if rejected and reject_kind == "stock":
        sku = REJECT_SKU
    elif rejected:
        customer = customers.penniless
    return {
        "customer_id": customer,
        "items": [{"sku": sku, "quantity": 1, "unit_price_cents": UNIT_PRICE_CENTS}],
        "currency": "USD",
    }


def wait_seconds(remaining_s: float) -> int:
    """The ``wait_s`` of the next long poll: what is left of the saga's time, in whole
    seconds (servers may take integers only), at least 1 and at most 30."""
    return max(1, min(MAX_WAIT_S, math.ceil(remaining_s)))


async def run_workload(
    url: str, options: WorkloadOptions, *, progress_to: TextIO | None = None
) -> BenchTally:
    """Prepare ``url`` for a run (stock, customers), run it, and return what was recorded.

    Args:
        url: Base URL of the server (sagaway's API or any server with its HTTP surface).
        options: What to run.
        progress_to: Where a progress line goes every ~2 s; None for silence.

    Returns:
        The tally, ``wall_s`` included.

    Raises:
        BenchSetupError: The server is not ready, unreachable, or refused the setup.
    """
    async with Workload(url, options, progress_to=progress_to) as workload:
        return await workload.run()


class Workload:
    """One bench run against one server, prepared on entry, run by :meth:`run`.

    Entering opens the HTTP session, checks ``/readyz``, stocks the bench SKUs and creates
    the run's customers, so a caller can sample the system's counters after the setup and
    before the run.
    """

    def __init__(
        self, url: str, options: WorkloadOptions, *, progress_to: TextIO | None = None
    ) -> None:
        self._url = url
        # URLs are joined as strings: the server may sit under a path prefix.
        self._base = url.rstrip("/")
        self._options = options
        self._progress_to = progress_to
        # Requests get their own generous timeout; the saga deadline is enforced separately.
        self._timeout = aiohttp.ClientTimeout(total=min(30.0, options.timeout_s))
        self._session: aiohttp.ClientSession | None = None
        self._customers: RunCustomers | None = None
        self._skus: tuple[str, ...] = BENCH_SKUS
        self._stocked: dict[str, int] = {}

    async def __aenter__(self) -> Workload:
        # Opened here, not in __init__: an aiohttp session belongs to the running loop.
        self._session = self._open_session()
        try:
            self._customers = await self._prepare()
        except BaseException:
            await self._session.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: the client shares the machine with the system it
        # measures, and with 100 workers httpx spent ~10 ms of CPU per saga, aiohttp ~0.6.
        connector = aiohttp.TCPConnector(
            limit=self._options.concurrency,
            # Drop idle connections well before a server would (uvicorn: 5 s by default),
            # so a request never goes out on a connection the server is closing.
            keepalive_timeout=2.0,
        )
        # No cookie jar: the HTTP surface sets none, and a jar is work on every answer.
        return aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar()
        )

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("enter the Workload (async with) before using it")
        return self._session

    @property
    def scope(self) -> RunScope:
        """What the run stocked and whose orders it placed (known once entered)."""
        if self._customers is None:
            raise RuntimeError("enter the Workload (async with) first")
        return RunScope(
            stock_totals=dict(self._stocked),
            customers=(self._customers.funded, self._customers.penniless),
        )

    async def run(self) -> BenchTally:
        """Place every order and wait for every saga; returns what was recorded."""
        if self._customers is None:
            raise RuntimeError("enter the Workload (async with) before running it")
        options = self._options
        tally = BenchTally()
        orders = iter(range(options.sagas))
        stop = asyncio.Event()
        started = time.perf_counter()
        progress = asyncio.create_task(self._progress(tally, started, stop))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(options.concurrency, options.sagas)):
                    group.create_task(self._worker(orders, tally))
        finally:
            tally.wall_s = time.perf_counter() - started
            stop.set()
            await progress
        return tally

    async def _prepare(self) -> RunCustomers:
        """Check readiness, stock the bench SKUs and create the run's customers."""
        options = self._options
        try:
            status, text = await self._exchange("GET", "/readyz")
        except TRANSPORT_ERRORS as exc:
            raise BenchSetupError(f"cannot reach {self._url}: {type(exc).__name__}") from exc
        if status != 200:
            raise BenchSetupError(f"{self._url}/readyz answered {status}: {text}")
        headers = dict(JSON_HEADERS)
        if options.admin_token:
            headers["Authorization"] = f"Bearer {options.admin_token}"
        run = secrets.token_hex(6)
        # SKUs of the run's own, with enough free units for the whole run each: what
        # they hold afterwards is this run's doing alone, so its invariants can be checked.
        self._skus = tuple(f"{sku}-{run}" for sku in BENCH_SKUS)
        stock = {sku: options.sagas for sku in self._skus}
        self._stocked = dict(stock)
        customers = RunCustomers(funded=f"bench-{run}", penniless=f"bench-{run}-poor")
        credit = {customers.funded: 2 * options.sagas * UNIT_PRICE_CENTS}
        if options.reject_every and options.reject_kind == "stock":
            stock[REJECT_SKU] = 0
        elif options.reject_every:
            credit[customers.penniless] = 0
        puts: list[tuple[str, dict[str, int]]] = [
            (f"/admin/inventory/{sku}", {"available": units}) for sku, units in stock.items()
        ]
        puts += [
            (f"/admin/customers/{customer}", {"credit_limit_cents": cents})
            for customer, cents in credit.items()
        ]
        for path, body in puts:
            try:
                status, text = await self._exchange(
                    "PUT", path, data=json.dumps(body).encode(), headers=headers
                )
            except TRANSPORT_ERRORS as exc:
                raise BenchSetupError(f"PUT {path} failed: {type(exc).__name__}") from exc
            if status == 401:
                raise BenchSetupError("the admin token was refused (401): check --admin-token")
            if status != 200:
                raise BenchSetupError(f"PUT {path} answered {status}: {text}")
        return customers

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """One setup request: its HTTP status and body text."""
        async with self._http.request(
            method, f"{self._base}{path}", data=data, headers=headers
        ) as answer:
            return answer.status, await answer.text()

    async def _worker(self, orders: Iterator[int], tally: BenchTally) -> None:
        # Workers share one iterator; safe because next() never awaits.
        for index in orders:
            await self.saga(index, tally)

    async def saga(self, index: int, tally: BenchTally, *, t0: float | None = None) -> SagaOutcome:
        """Place the ``index``-th order, wait for its saga, and record it in ``tally``.

        Args:
            index: Position of the order in the run (see :func:`order_body`).
            tally: Where the outcome is recorded.
            t0: When the saga counts from (``time.perf_counter()``); default now. An
                open-loop caller passes the time the order was due, so that a late
                start counts in the latency instead of hiding it.

        Returns:
            The terminal status, ``timeout``, or ``http_error``, and the latency in ms
            (None for an HTTP error).
        """
        if self._customers is None:
            raise RuntimeError("enter the Workload (async with) before running it")
        options = self._options
        body = order_body(
            index,
            customers=self._customers,
            reject_every=options.reject_every,
            reject_kind=options.reject_kind,
            skus=self._skus,
        )
        t0 = time.perf_counter() if t0 is None else t0
        try:
            async with asyncio.timeout(max(0.0, t0 + options.timeout_s - time.perf_counter())):
                outcome = await self._one_saga(body, tally, t0)
        except TimeoutError:
            tally.timeouts += 1
            return SagaOutcome("timeout", (time.perf_counter() - t0) * 1000)
        if outcome is None:
            return SagaOutcome("http_error", None)
        status, t1 = outcome
        latency_ms = (t1 - t0) * 1000
        tally.terminal_ms.setdefault(status, []).append(latency_ms)
        return SagaOutcome(status, latency_ms)

    async def _one_saga(
        self, body: dict[str, object], tally: BenchTally, t0: float
    ) -> tuple[str, float] | None:
        """Place one order and wait for its saga; the terminal status and when it was seen.

        Returns None when an HTTP error ended the attempt (already recorded in ``tally``).
        """
        options = self._options
        saga_id = await self._place_order(body, tally, t0)
        if saga_id is None:
            return None
        saga_url = f"{self._base}/sagas/{saga_id}"
        deadline = t0 + options.timeout_s
        while True:
            try:
                if options.long_poll:
                    wait_s = wait_seconds(deadline - time.perf_counter())
                    tally.polls += 1
                    asked = time.perf_counter()
                    code, status = await self._saga_status(
                        f"{saga_url}?wait_s={wait_s}",
                        limit=aiohttp.ClientTimeout(total=wait_s + WAIT_SLACK_S),
                    )
                    running = code == 200 and status not in TERMINAL_STATUSES
                    if running and time.perf_counter() - asked < wait_s / 2:
                        # Still running, yet answered long before wait_s: the server
                        # ignores wait_s. Pace the next request as a poll would.
                        await asyncio.sleep(options.poll_interval_s)
                else:
                    await asyncio.sleep(options.poll_interval_s)
                    tally.polls += 1
                    code, status = await self._saga_status(saga_url, limit=self._timeout)
            except TRANSPORT_ERRORS as exc:
                # Reading a saga is safe to repeat: count it and ask again (after a
                # pause, so that a server that is down is not asked in a tight loop).
                tally.retries[f"GET {type(exc).__name__}"] += 1
                if options.long_poll:
                    await asyncio.sleep(options.poll_interval_s)
                continue
            if code != 200:
                tally.http_errors[f"GET {code}"] += 1
                return None
            if status in TERMINAL_STATUSES:
                return status, time.perf_counter()

    async def _place_order(
        self, body: dict[str, object], tally: BenchTally, t0: float
    ) -> str | None:
        """``POST /orders``; the saga's id, or None when an HTTP error ended the attempt."""
        # Like a careful client, send an idempotency key and retry the POST when the
        # connection fails: the key makes the retry return the first order, never a second.
        headers = JSON_HEADERS | {"Idempotency-Key": f"bench-{uuid.uuid4()}"}
        # Encoded once: a retry sends the same bytes.
        data = json.dumps(body).encode()
        accepted: dict[str, object] = {}
        for attempt in range(1, TRANSPORT_ATTEMPTS + 1):
            try:
                async with self._http.post(
                    f"{self._base}/orders", data=data, headers=headers
                ) as posted:
                    code = posted.status
                    # Only an accepted order's body is of use; the rest count by status.
                    if code == 202:
                        accepted = await posted.json(content_type=None)
                break
            except TRANSPORT_ERRORS as exc:
                if attempt == TRANSPORT_ATTEMPTS:
                    tally.http_errors[f"POST {type(exc).__name__}"] += 1
                    return None
                tally.retries[f"POST {type(exc).__name__}"] += 1
        tally.post_ms.append((time.perf_counter() - t0) * 1000)
        if code != 202:
            tally.http_errors[f"POST {code}"] += 1
            return None
        return str(accepted["saga_id"])

    async def _saga_status(
        self, url: str, *, limit: aiohttp.ClientTimeout
    ) -> tuple[int, str | None]:
        """One ``GET /sagas/{id}`` within ``limit``: the HTTP status and, when 200, the
        saga's status."""
        async with self._http.get(url, timeout=limit) as answer:
            if answer.status != 200:
                return answer.status, None
            return 200, str((await answer.json(content_type=None))["status"])

    async def _progress(self, tally: BenchTally, started: float, stop: asyncio.Event) -> None:
        last_done, last_at = 0, started
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROGRESS_EVERY_S)
            if self._progress_to is None:
                continue
            now = time.perf_counter()
            done = tally.done
            rate = (done - last_done) / (now - last_at) if now > last_at else 0.0
            print(
                f"[{now - started:6.1f}s] done {done}/{self._options.sagas}  "
                f"current {rate:.1f} sagas/s",
                file=self._progress_to,
                flush=True,
            )
            last_done, last_at = done, now
