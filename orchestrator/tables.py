"""The orchestrator's schema ``sagas``: saga state, history, outbox and inbox."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from sagaway.outbox.tables import inbox_table, outbox_table

metadata = MetaData(schema="sagas")

# Written as literal SQL, not bound parameters, so that the planner can match queries
# against the expression index and the partial index below (queries.py uses the same
# strings).
CUSTOMER_ID_SQL = "(data ->> 'customer_id')"
FINISHED_SQL = "status IN ('COMPLETED', 'COMPENSATED', 'FAILED')"

sagas = Table(
    "sagas",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("saga_type", String(64), nullable=False),
    # One saga per order, enforced by the database rather than by hope.
    Column("order_id", Uuid, unique=True),
    Column("correlation_id", Uuid, nullable=False),
    Column("status", String(16), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("cursor", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("pending_message_id", Uuid),
    Column("wake_at", DateTime(timezone=True)),
    Column("failure_reason", Text),
    Column("rejection_reason", Text),
    Column("steps", JSONB, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The trace the saga was started in: the sweeper's and operators' actions on the
    # saga join it, so one saga stays one trace however late it is resumed.
    Column("traceparent", String(55)),
    # The definition the saga started under (SagaDefinition.version, .fingerprint and
    # .shape): the start-up check compares it with the current one. NULL for a saga
    # recorded before definitions had versions (only its step names are known).
    Column("definition_version", Integer),
    Column("definition_fingerprint", String(16)),
    Column("definition_shape", JSONB),
    # Only sagas waiting for a deadline or a backoff have wake_at set, so the sweeper's
    # query reads a small index however many finished sagas there are.
    Index("ix_sagas_wake_at", "wake_at", postgresql_where=text("wake_at IS NOT NULL")),
    Index("ix_sagas_status_created", "status", "created_at", "id"),
    Index("ix_sagas_created", "created_at", "id"),
    # The dashboard's filtered lists page newest first by (created_at, id); each filter
    # gets an index that starts with its equality column, so a page is a range scan.
    Index("ix_sagas_type_created", "saga_type", "created_at", "id"),
    Index("ix_sagas_customer_created", text(CUSTOMER_ID_SQL), "created_at", "id"),
    # Throughput: sagas that ended in the last minutes, by the time they ended (with
    # their status, so that counting per minute and status can read the index alone).
    Index("ix_sagas_finished_updated", "updated_at", "status", postgresql_where=text(FINISHED_SQL)),
)

saga_events = Table(
    "saga_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("saga_id", Uuid, ForeignKey("sagas.sagas.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Typed fields (orchestrator.history.HistoryEntry); sentences are rendered from
    # them where they are shown.
    Column("kind", String(32), nullable=False),
    Column("step", String(64)),
    Column("attempt", Integer),
    Column("purpose", String(16)),
    Column("outcome", String(16)),
    Column("reason", Text),
    Column("message_type", String(128)),
    Column("participant", String(64)),
    Column("handler", String(128)),
    Column("message_id", Uuid),
    Column("actor", String(64)),
    Column("delay_s", Float),
    Column("note", Text),
    Index("ix_saga_events_saga", "saga_id", "id"),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
