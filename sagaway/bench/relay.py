"""``sagaway bench relay``: the relay's throughput and latency against the broker's limit.

Everything runs against the configured PostgreSQL and RabbitMQ but in a schema and
broker names of its own (``bench_<id>``), removed afterwards, so it can run next to
a live installation. Phases, in one run so the figures are comparable (the latency
phase, 4, runs first, on a quiet broker and database):

1. raw limit: P processes publish persistent messages with confirms straight to the
   bench queue, no database (P = 1, then 2), with two clients (see RAW_CLIENTS);
2. drain: the outbox is prefilled with N rows (4 per saga, so ordering is at work),
   then 1 (then 2) relay processes drain it; msgs/s from the first to the last
   publish of the prefilled rows;
3. drain while new rows keep arriving (two relays, steady inserters): every row
   published in that span counts, and the prefilled rows alone are shown too;
4. latency: a steady trickle of single-row transactions; commit-to-publish p50/p99,
   from the acknowledgement of each commit to ``published_at`` (stamped after the
   confirm), and also from ``created_at`` (see ``_latency``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
from sqlalchemy import MetaData, text

from sagaway.bench.stats import LatencyStats, summarize
from sagaway.migrate import migrate
from sagaway.outbox.amqp import QueueSpec, Topology, connect, declare
from sagaway.outbox.database import create_engine, raw_connect
from sagaway.outbox.publisher import AioPikaPublisher, RawMessage
from sagaway.outbox.settings import Settings
from sagaway.outbox.tables import outbox_table

WINDOW = 500
INSERTERS = 8
# The raw limit is measured with two clients. ``aiopika``: aio-pika's own publish,
# each awaiting its confirm, a window of WINDOW in flight: the raw publisher the
# relay issue defines (about 7,100 msgs/s for one process on the reference machine),
# and the ``ratio:`` line. ``batched``: the relay's own batched publisher fed from
# memory: the relay's broker work without the database, a stricter bar whose ratio
# is the price of the outbox alone on this machine's shared cores.
RAW_CLIENTS = ("aiopika", "batched")


@dataclass(frozen=True, slots=True)
class _Drained:
    prefilled: float  # prefilled rows / the span from their first to their last publish
    overall: float  # every row published within that span / the span
    arrived: float  # rows inserted within that span / the span (0 without inserters)


@dataclass(frozen=True, slots=True)
class RelayBenchOptions:
    """What ``sagaway bench relay`` measures."""

    messages: int = 100_000
    messages_per_saga: int = 4
    latency_rate: float = 200.0
    latency_seconds: float = 10.0
    steady_rate: float = 2000.0


@dataclass(frozen=True, slots=True)
class _Names:
    run: str

    @property
    def schema(self) -> str:
        return f"bench_{self.run}"

    def exchange(self, settings: Settings) -> str:
        return f"{settings.namespace}.bench-{self.run}"

    def queue(self, settings: Settings) -> str:
        return f"{settings.namespace}.bench-{self.run}.q"


def run_relay_bench(settings: Settings, options: RelayBenchOptions) -> int:
    """Run every phase and print the figures; returns the exit code."""
    return asyncio.run(_main(settings, options))


async def _main(settings: Settings, options: RelayBenchOptions) -> int:
    # The bench needs the NOTIFY trigger function of the migrations; migrating is
    # idempotent and safe next to a running system, and makes a fresh machine work.
    await migrate(settings)
    names = _Names(uuid.uuid4().hex[:8])
    engine = create_engine(settings.database_url, pool_size=4)
    table = outbox_table(MetaData(schema=names.schema))
    connection = await connect(settings.amqp_url, name="sagaway-bench-relay")
    channel = await connection.channel()
    topology = Topology(
        exchanges=(names.exchange(settings),),
        queues=(
            QueueSpec(
                name=names.queue(settings), exchange=names.exchange(settings), routing_keys=("k",)
            ),
        ),
        dead_letter_exchange=f"{names.exchange(settings)}.dlx",
        queue_type=settings.queue_type,
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA {names.schema}"))
            await conn.run_sync(table.metadata.create_all)
            # As migration 0006 sets it on every service's outbox.
            await conn.execute(text(f"ALTER TABLE {names.schema}.outbox SET (fillfactor = 50)"))
            await conn.execute(
                text(
                    f"CREATE TRIGGER outbox_notify AFTER INSERT ON {names.schema}.outbox "
                    "FOR EACH STATEMENT EXECUTE FUNCTION public.sagaway_outbox_notify()"
                )
            )
        await declare(channel, topology)
        print(
            f"relay bench: {options.messages} messages, queue type {settings.queue_type}, "
            f"schema {names.schema}",
            file=sys.stderr,
        )
        # Latency first, while the broker and the database are not yet digesting the
        # hundreds of thousands of messages of the throughput phases.
        lat, lat_from_start = await _latency(settings, names, options)
        await _purge(channel, names.queue(settings))
        raw: dict[tuple[str, int], float] = {}
        relay: dict[int, float] = {}
        for processes in (1, 2):
            for client in RAW_CLIENTS:
                raw[client, processes] = await _raw(
                    settings, names, options.messages, processes, client
                )
                await _purge(channel, names.queue(settings))
            relay[processes] = (await _drain(settings, names, options, processes)).prefilled
            await _purge(channel, names.queue(settings))
        steady = await _drain(settings, names, options, 2, steady_rate=options.steady_rate)
        await _purge(channel, names.queue(settings))
    finally:
        await channel.queue_delete(names.queue(settings))
        await channel.queue_delete(topology.dead_letter_queue(names.queue(settings)))
        await channel.exchange_delete(names.exchange(settings))
        await channel.exchange_delete(topology.dead_letter_exchange)
        await connection.close()
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {names.schema} CASCADE"))
        await engine.dispose()

    for processes in (1, 2):
        plural = "es" if processes > 1 else ""
        aiopika, batched = raw["aiopika", processes], raw["batched", processes]
        print(f"raw, {processes} process{plural}, aio-pika publish:  {aiopika:8.0f} msgs/s")
        print(f"raw, {processes} process{plural}, batched publisher: {batched:8.0f} msgs/s")
        print(
            f"relay, {processes} process{plural}:                   {relay[processes]:8.0f} msgs/s"
            f"  (ratio {relay[processes] / aiopika:.2f};"
            f" {relay[processes] / batched:.2f} to the batched publisher)"
        )
    print(
        f"relay, 2 processes, rows arriving:  {steady.overall:8.0f} msgs/s"
        f"  (ratio {steady.overall / raw['aiopika', 2]:.2f};"
        f" {steady.overall / raw['batched', 2]:.2f} to the batched publisher;"
        f" prefilled rows alone {steady.prefilled:.0f} msgs/s;"
        f" new rows arrived at {steady.arrived:.0f}/s)"
    )
    print(f"ratio: {relay[2] / raw['aiopika', 2]:.2f}")
    print(f"ratio to the batched publisher without a database: {relay[2] / raw['batched', 2]:.2f}")
    print(
        f"commit->publish latency at {options.latency_rate:g} msgs/s: "
        f"p50 {lat.p50:.2f} ms  p99 {lat.p99:.2f} ms  max {lat.max:.2f} ms  ({lat.count} samples)"
    )
    print(
        "  (from the inserting transaction's start, its own commit included: "
        f"p50 {lat_from_start.p50:.2f} ms  p99 {lat_from_start.p99:.2f} ms)"
    )
    return 0


async def _purge(channel: aio_pika.abc.AbstractChannel, queue: str) -> None:
    q = await channel.get_queue(queue, ensure=False)
    await q.purge()


async def _raw(settings: Settings, names: _Names, total: int, processes: int, client: str) -> float:
    """Publish ``total`` messages from ``processes`` processes; aggregate msgs/s over the
    span from the first publish to the last confirm (process start-up excluded)."""
    share = total // processes
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sagaway.bench.relay",
            "raw",
            client,
            names.exchange(settings),
            str(share),
            env=os.environ | {"SAGAWAY_AMQP_URL": settings.amqp_url},
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    spans = []
    for p in procs:
        out, _ = await p.communicate()
        if p.returncode != 0:
            raise RuntimeError("raw publisher failed")
        spans.append(json.loads(out))
    span = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    print(f"  raw {client} x{processes}: {share * processes} in {span:.2f}s", file=sys.stderr)
    return float(share * processes / span)


async def _prefill(names: _Names, settings: Settings, count: int, per_saga: int) -> None:
    conn = await raw_connect(settings.database_url)
    try:
        body = _body()
        records = []
        saga = uuid.uuid4()
        for n in range(count):
            if n % per_saga == 0:
                saga = uuid.uuid4()
            records.append(
                (uuid.uuid4(), saga, saga, "BenchMessage", names.exchange(settings), "k", body)
            )
        await conn.copy_records_to_table(
            "outbox",
            schema_name=names.schema,
            records=records,
            columns=[
                "message_id",
                "saga_id",
                "correlation_id",
                "message_type",
                "exchange",
                "routing_key",
                "body",
            ],
        )
    finally:
        await conn.close()


async def _drain(
    settings: Settings,
    names: _Names,
    options: RelayBenchOptions,
    processes: int,
    *,
    steady_rate: float = 0.0,
) -> _Drained:
    """Prefill, start ``processes`` relays, and measure how fast the prefilled rows go
    out (first to last publish), optionally while inserters keep adding rows."""
    await _prefill(names, settings, options.messages, options.messages_per_saga)
    conn = await raw_connect(settings.database_url)
    last_prefilled = await conn.fetchval(f"SELECT max(id) FROM {names.schema}.outbox")
    relays = [await _spawn_relay(settings, names) for _ in range(processes)]
    stop = asyncio.Event()
    counter = [0]
    inserters = [
        asyncio.create_task(_trickle(settings, names, steady_rate / INSERTERS, stop, counter))
        for _ in range(INSERTERS if steady_rate else 0)
    ]
    try:
        await _until_published(conn, names, upto=last_prefilled)
        stop.set()
        await asyncio.gather(*inserters)
        first, last = await conn.fetchrow(
            f"SELECT min(published_at), max(published_at) FROM {names.schema}.outbox"
            " WHERE id <= $1",
            last_prefilled,
        )
        await _until_published(conn, names)
        within = await conn.fetchval(
            f"SELECT count(*) FROM {names.schema}.outbox WHERE published_at BETWEEN $1 AND $2",
            first,
            last,
        )
        arrived = await conn.fetchval(
            f"SELECT count(*) FROM {names.schema}.outbox"
            " WHERE id > $1 AND created_at BETWEEN $2 AND $3",
            last_prefilled,
            first,
            last,
        )
        span = (last - first).total_seconds()
        await conn.execute(f"TRUNCATE {names.schema}.outbox")
    finally:
        await conn.close()
        await _stop(relays)
    extra = (
        f", {counter[0]} more inserted meanwhile, {within} rows published in that span"
        if steady_rate
        else ""
    )
    print(
        f"  relay x{processes}: {options.messages} prefilled rows out in {span:.2f}s{extra}",
        file=sys.stderr,
    )
    return _Drained(
        prefilled=options.messages / span, overall=within / span, arrived=arrived / span
    )


async def _until_published(conn: Any, names: _Names, *, upto: int | None = None) -> None:
    """Poll until every row (with id <= ``upto``) is published; the database is the
    only witness, so polling it is the way to wait. The probe stops at the first
    unpublished row of the partial index and runs a few times a second, so the
    watching costs the database next to nothing while the relays are measured."""
    query = f"SELECT EXISTS (SELECT 1 FROM {names.schema}.outbox WHERE published_at IS NULL"
    args: tuple[int, ...] = ()
    if upto is not None:
        query += " AND id <= $1"
        args = (upto,)
    query += ")"
    while await conn.fetchval(query, *args):  # noqa: ASYNC110
        await asyncio.sleep(0.2)


async def _stop(relays: list[asyncio.subprocess.Process]) -> None:
    for r in relays:
        r.terminate()
    await asyncio.gather(*(r.wait() for r in relays))


async def _spawn_relay(settings: Settings, names: _Names) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sagaway.bench.relay",
        "relay",
        names.schema,
        env=os.environ
        | {
            "SAGAWAY_DATABASE_URL": settings.database_url,
            "SAGAWAY_AMQP_URL": settings.amqp_url,
            "SAGAWAY_LOG_LEVEL": "WARNING",
        },
    )


async def _trickle(
    settings: Settings,
    names: _Names,
    rate: float,
    stop: asyncio.Event,
    counter: list[int],
    acks: dict[int, float] | None = None,
) -> None:
    """Insert single-row transactions at ``rate`` per second until ``stop``; with
    ``acks``, note when each row's commit was acknowledged (epoch seconds, by id)."""
    conn = await raw_connect(settings.database_url)
    body = _body()
    interval = 1.0 / rate
    next_at = time.perf_counter()
    try:
        while not stop.is_set():
            saga = uuid.uuid4()
            row_id = await conn.fetchval(
                f"INSERT INTO {names.schema}.outbox (message_id, saga_id, correlation_id,"
                " message_type, exchange, routing_key, body)"
                " VALUES ($1, $2, $2, 'BenchMessage', $3, 'k', $4) RETURNING id",
                uuid.uuid4(),
                saga,
                names.exchange(settings),
                body,
            )
            if acks is not None:
                acks[row_id] = time.time()
            counter[0] += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await conn.close()


async def _latency(
    settings: Settings, names: _Names, options: RelayBenchOptions
) -> tuple[LatencyStats, LatencyStats]:
    """Commit-to-publish latency of single-row transactions, measured two ways: from
    the acknowledgement of the row's commit (the headline: the row exists for the
    relay from then on) and from its ``created_at``, the start of the inserting
    transaction, which also counts the writer's own commit (about 0.7 ms here)."""
    relays = [await _spawn_relay(settings, names) for _ in range(2)]
    conn = await raw_connect(settings.database_url)
    try:
        # Let the relays connect and LISTEN before measuring (a warm-up row proves it).
        await conn.execute(
            f"INSERT INTO {names.schema}.outbox (message_id, saga_id, correlation_id,"
            " message_type, exchange, routing_key, body)"
            " VALUES ($1, $1, $1, 'Warmup', $2, 'k', '{}')",
            uuid.uuid4(),
            names.exchange(settings),
        )
        await _until_published(conn, names)
        await conn.execute(f"TRUNCATE {names.schema}.outbox")
        stop = asyncio.Event()
        acks: dict[int, float] = {}
        task = asyncio.create_task(_trickle(settings, names, options.latency_rate, stop, [0], acks))
        await asyncio.sleep(options.latency_seconds)
        stop.set()
        await task
        await _until_published(conn, names)
        # Both clocks are this machine's: PostgreSQL's clock_timestamp() and time.time().
        rows = await conn.fetch(
            "SELECT id, extract(epoch FROM published_at) AS published,"
            " extract(epoch FROM published_at - created_at) * 1000 AS since_start"
            f" FROM {names.schema}.outbox"
        )
        await conn.execute(f"TRUNCATE {names.schema}.outbox")
    finally:
        await conn.close()
        await _stop(relays)
    from_commit = summarize([(float(r["published"]) - acks[r["id"]]) * 1000 for r in rows])
    from_start = summarize([float(r["since_start"]) for r in rows])
    assert from_commit is not None and from_start is not None
    return from_commit, from_start


def _body() -> bytes:
    return json.dumps(
        {
            "message_id": str(uuid.uuid4()),
            "message_type": "BenchMessage",
            "saga_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
            "causation_id": None,
            "occurred_at": "2026-01-01T00:00:00Z",
            "payload": {"order_id": str(uuid.uuid4()), "items": [{"sku": "SKU-1", "quantity": 2}]},
        }
    ).encode()


# ---------------------------------------------------------------- child processes


async def _raw_child(client: str, exchange_name: str, count: int) -> None:
    """Publish ``count`` persistent messages with confirms and nothing else; prints the
    span from the first publish to the last confirm."""
    url = os.environ.get("SAGAWAY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    connection = await connect(url, name=f"sagaway-bench-{client}")
    try:
        publish = _raw_aiopika if client == "aiopika" else _raw_batched
        started = time.time()
        await publish(connection, exchange_name, count)
        ended = time.time()
    finally:
        await connection.close()
    print(json.dumps({"start": started, "end": ended}))


async def _raw_aiopika(
    connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str, count: int
) -> None:
    """aio-pika's own publish, each awaiting its confirm, WINDOW of them in flight."""
    body = _body()
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange(exchange_name)
    window = asyncio.Semaphore(WINDOW)

    async def one() -> None:
        try:
            await exchange.publish(
                aio_pika.Message(
                    body=body,
                    message_id=str(uuid.uuid4()),
                    correlation_id=str(uuid.uuid4()),
                    type="BenchMessage",
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="k",
                mandatory=True,
            )
        finally:
            window.release()

    tasks = []
    for _ in range(count):
        await window.acquire()
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)


async def _raw_batched(
    connection: aio_pika.abc.AbstractRobustConnection, exchange_name: str, count: int
) -> None:
    """The relay's publisher with the relay's batch size and number of loops, fed from
    memory instead of the outbox."""
    settings = Settings()
    publisher = AioPikaPublisher(connection, timeout_s=settings.publish_timeout_s)
    body = _body()
    batch = settings.relay_batch_size
    remaining = [count]

    async def loop() -> None:
        while remaining[0] > 0:
            size = min(batch, remaining[0])
            remaining[0] -= size
            messages = [
                RawMessage(
                    message_id=str(uuid.uuid4()),
                    message_type="BenchMessage",
                    correlation_id=str(uuid.uuid4()),
                    exchange=exchange_name,
                    routing_key="k",
                    body=body,
                )
                for _ in range(size)
            ]
            failed = [r for r in await publisher.publish_batch(messages) if r is not None]
            if failed:
                raise RuntimeError(f"{len(failed)} raw publishes failed: {failed[0]!r}")

    await asyncio.gather(*(loop() for _ in range(settings.relay_concurrency)))


async def _relay_child(schema: str) -> None:
    from functools import partial

    from sagaway.outbox.relay import Relay
    from sagaway.outbox.wakeup import Wakeup
    from sagaway.runners.lifecycle import stop_on_signals
    from sagaway.runners.relay import relay_options

    settings = Settings()
    stop = stop_on_signals()
    engine = create_engine(settings.database_url, pool_size=settings.relay_concurrency + 1)
    connection = await connect(settings.amqp_url, name="sagaway-bench-relay-child")
    wakeup = Wakeup(partial(raw_connect, settings.database_url))
    relay = Relay(
        engine=engine,
        tables=[outbox_table(MetaData(schema=schema))],
        publisher=AioPikaPublisher(connection, timeout_s=settings.publish_timeout_s),
        options=relay_options(settings),
        wakeup=wakeup,
    )
    try:
        await asyncio.gather(wakeup.run(stop), relay.run(stop))
    finally:
        await connection.close()
        await engine.dispose()


if __name__ == "__main__":
    from sagaway.logging import configure_logging

    configure_logging(level="WARNING")
    if sys.argv[1] == "raw":
        asyncio.run(_raw_child(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif sys.argv[1] == "relay":
        asyncio.run(_relay_child(sys.argv[2]))
