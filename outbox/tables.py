"""Table factories: every service owns an outbox and an inbox in its own schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)


def outbox_table(metadata: MetaData) -> Table:
    """Messages written in a service's transaction, waiting for the relay.

    ``id`` orders a saga's messages as they were written; the relay never uses it as a
    high-water mark (a lower id can commit after a higher one), it claims any
    unpublished row instead. A claim is a lease (``claimed_until``) with a fencing
    token (``claim_token``): a relay that died mid-batch loses its rows when the lease
    runs out, and a relay whose lease ran out cannot mark rows another relay took.
    """
    schema = metadata.schema
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("message_id", Uuid, nullable=False, unique=True),
        Column("saga_id", Uuid, nullable=False),
        Column("correlation_id", Uuid, nullable=False),
        Column("message_type", String(128), nullable=False),
        Column("exchange", String(255), nullable=False),
        Column("routing_key", String(255), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text),
        Column("claimed_until", DateTime(timezone=True)),
        Column("claim_token", Uuid),
        Column("next_attempt_at", DateTime(timezone=True)),
        # Set when the relay gave up on the row; it stays (blocking only its saga's
        # later messages) until an operator deals with it.
        Column("dead_at", DateTime(timezone=True)),
        # W3C trace context of the transaction that wrote the row; the relay puts it in
        # the AMQP headers so the consumer's span continues the writer's trace.
        Column("traceparent", String(55)),
        # The relay's claim reads only rows still to send; a partial index keeps that
        # query independent of how many published rows are still kept.
        Index(
            f"ix_{schema}_outbox_pending",
            "id",
            postgresql_where=text("published_at IS NULL AND dead_at IS NULL"),
        ),
        # Serves the per-saga ordering check of the claim (dead rows included: they
        # hold back their own saga).
        Index(
            f"ix_{schema}_outbox_saga_unpublished",
            "saga_id",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
    )


def inbox_table(metadata: MetaData) -> Table:
    """Messages a consumer already processed, recorded in the same transaction as the
    effect, so a redelivery hits the primary key and is dropped."""
    schema = metadata.schema
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(128), nullable=False),
        Column("message_id", Uuid, nullable=False),
        Column("message_type", String(128), nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        # A hash of the envelope as first received: a later message with the same id and
        # other content is told apart from a redelivery (both are dropped; the first is
        # logged as a conflict). Null on rows recorded before it existed.
        Column("digest", LargeBinary),
        PrimaryKeyConstraint("consumer", "message_id"),
        # Lets the janitor find rows past their retention without scanning the table.
        Index(f"ix_{schema}_inbox_received", "received_at"),
    )
