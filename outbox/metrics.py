"""Prometheus metrics of the outbox: relay throughput, latency, backlog, dead rows."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter(
    "sagaway_outbox_published_total", "Outbox messages published and confirmed.", ["table"]
)
DEAD = Counter(
    "sagaway_outbox_dead_total", "Outbox messages parked as dead after failed publishes.", ["table"]
)
PUBLISH_SECONDS = Histogram(
    "sagaway_outbox_publish_batch_seconds",
    "Time to publish one claimed batch and receive its confirms.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG_SECONDS = Histogram(
    "sagaway_outbox_commit_to_publish_seconds",
    "Delay from a message's insert to its confirmed publish.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BACKLOG = Gauge(
    "sagaway_outbox_backlog", "Outbox rows not yet published (dead excluded).", ["table"]
)
OLDEST_SECONDS = Gauge(
    "sagaway_outbox_oldest_unpublished_seconds",
    "Age of the oldest outbox row not yet published (0 when none).",
    ["table"],
)
DEAD_ROWS = Gauge("sagaway_outbox_dead_rows", "Outbox rows parked as dead right now.", ["table"])
CONSUMED = Counter(
    "sagaway_messages_consumed_total",
    "Messages a consumer finished with, by result.",
    ["queue", "result"],
)
CONSUME_SECONDS = Histogram(
    "sagaway_message_processing_seconds",
    "Time to apply one message (inbox, handler, commit).",
    ["queue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEAD_LETTERED = Counter(
    "sagaway_messages_dead_lettered_total",
    "Messages a consumer sent to its dead-letter queue.",
    ["queue", "reason"],
)
REJECTED = Counter(
    "sagaway_messages_rejected_total",
    "Messages a consumer refused for what they are (too large, not JSON, not an envelope, "
    "an unknown type, a payload that does not fit, a reply for no saga, a message id "
    "reused with other content): dead-lettered at once, or dropped.",
    ["queue", "reason", "action"],  # action: dead_lettered, dropped
)
BATCHES = Counter(
    "sagaway_consumer_batches_total",
    "Transactions of two or more messages: committed, or failed and applied one by one.",
    ["queue", "outcome"],  # committed, fell_back
)
BATCHED_MESSAGES = Counter(
    "sagaway_consumer_batched_messages_total",
    "Messages taken in a committed transaction of two or more.",
    ["queue"],
)
PURGED = Counter(
    "sagaway_janitor_deleted_rows_total",
    "Published outbox rows and old inbox rows removed.",
    ["table"],
)
