"""History entries as sentences (how they were stored before 0010) and as typed fields.

Shared by the rendering unit tests and the migration test: each sentence parses into
its entry, and each entry renders back into its sentence.
"""

from __future__ import annotations

import uuid

from sagaway.orchestrator.history import HistoryEntry, HistoryKind, Purpose

K = HistoryKind
SENT_ID = uuid.UUID("c3a9e1f4-7b2d-4e6a-9f1c-8d5b2a7e3f10")
REPLY_ID = uuid.UUID("9d2e4f6a-1b3c-4d5e-8f7a-6b5c4d3e2f1a")

# (kind stored, step stored, sentence stored) -> the typed entry it becomes. The step
# stored with a move was the step the saga was at afterwards; the typed entry names
# the step the move is about.
SAMPLES: list[tuple[str, str | None, uuid.UUID | None, str, HistoryEntry]] = [
    ("transition", "reserve_inventory", None, "saga started", HistoryEntry(kind=K.SAGA_STARTED)),
    (
        "command_sent",
        "reserve_inventory",
        SENT_ID,
        "ReserveInventory to inventory (action, attempt 1)",
        HistoryEntry(
            kind=K.COMMAND_SENT,
            step="reserve_inventory",
            message_id=SENT_ID,
            message_type="ReserveInventory",
            participant="inventory",
            purpose=Purpose.ACTION,
            attempt=1,
        ),
    ),
    (
        "reply_received",
        "reserve_inventory",
        REPLY_ID,
        "InventoryReserved (succeeded)",
        HistoryEntry(
            kind=K.REPLY_RECEIVED,
            step="reserve_inventory",
            message_id=REPLY_ID,
            message_type="InventoryReserved",
            outcome="succeeded",
        ),
    ),
    (
        "reply_received",
        "authorize_payment",
        REPLY_ID,
        "PaymentRejected (rejected: insufficient_funds: over\nthe limit)",
        HistoryEntry(
            kind=K.REPLY_RECEIVED,
            step="authorize_payment",
            message_id=REPLY_ID,
            message_type="PaymentRejected",
            outcome="rejected",
            reason="insufficient_funds: over\nthe limit",
        ),
    ),
    (
        "transition",
        "authorize_payment",
        None,
        "step reserve_inventory succeeded",
        HistoryEntry(kind=K.STEP_SUCCEEDED, step="reserve_inventory"),
    ),
    (
        "transition",
        "reserve_inventory",
        None,
        "step authorize_payment rejected: insufficient_funds",
        HistoryEntry(kind=K.STEP_REJECTED, step="authorize_payment", reason="insufficient_funds"),
    ),
    (
        "transition",
        "authorize_payment",
        None,
        "authorize_payment attempt 1 failed: no reply within 5s",
        HistoryEntry(
            kind=K.ATTEMPT_FAILED,
            step="authorize_payment",
            purpose=Purpose.ACTION,
            attempt=1,
            outcome="timeout",
            reason="no reply within 5s",
        ),
    ),
    (
        "transition",
        "authorize_payment",
        None,
        "retrying in 0.5s",
        HistoryEntry(kind=K.RETRY_SCHEDULED, step="authorize_payment", delay_s=0.5),
    ),
    (
        "transition",
        "authorize_payment",
        None,
        "retry attempt 2",
        HistoryEntry(kind=K.RETRY_STARTED, step="authorize_payment", attempt=2),
    ),
    (
        "transition",
        "reserve_inventory",
        None,
        "reserve_inventory (compensate) attempt 3 failed: boom",
        HistoryEntry(
            kind=K.ATTEMPT_FAILED,
            step="reserve_inventory",
            purpose=Purpose.COMPENSATION,
            attempt=3,
            outcome="failed",
            reason="boom",
        ),
    ),
    (
        "transition",
        None,
        None,
        "NotifyCustomer (epilogue) attempt 2 failed: no reply within 10s",
        HistoryEntry(
            kind=K.ATTEMPT_FAILED,
            purpose=Purpose.EPILOGUE,
            message_type="NotifyCustomer",
            attempt=2,
            outcome="timeout",
            reason="no reply within 10s",
        ),
    ),
    (
        "local_action",
        "approve_order",
        None,
        "orders.approve (succeeded)",
        HistoryEntry(
            kind=K.LOCAL_ACTION,
            step="approve_order",
            handler="orders.approve",
            purpose=Purpose.ACTION,
            outcome="succeeded",
        ),
    ),
    (
        "local_action",
        None,
        None,
        "orders.reject (failed: database said no)",
        HistoryEntry(
            kind=K.LOCAL_ACTION,
            handler="orders.reject",
            purpose=Purpose.EPILOGUE,
            outcome="failed",
            reason="database said no",
        ),
    ),
    (
        "transition",
        None,
        None,
        "orders.reject done",
        HistoryEntry(kind=K.EPILOGUE_DONE, purpose=Purpose.EPILOGUE, handler="orders.reject"),
    ),
    (
        "stale_reply",
        None,
        REPLY_ID,
        "PaymentAuthorized ignored: not for the attempt in flight",
        HistoryEntry(kind=K.STALE_REPLY, message_id=REPLY_ID, message_type="PaymentAuthorized"),
    ),
    (
        "admin_retry",
        None,
        None,
        "requested by admin",
        HistoryEntry(kind=K.ADMIN_RETRY, actor="admin"),
    ),
    (
        "transition",
        "authorize_payment",
        None,
        "operator retry: fresh attempt budget",
        HistoryEntry(kind=K.SAGA_RESUMED, step="authorize_payment"),
    ),
    (
        "admin_abort",
        None,
        None,
        "requested by alice",
        HistoryEntry(kind=K.ADMIN_ABORT, actor="alice"),
    ),
    (
        "transition",
        "reserve_inventory",
        None,
        "operator abort: compensating",
        HistoryEntry(kind=K.SAGA_ABORTED, step="reserve_inventory"),
    ),
    (
        "transition",
        "reserve_inventory",
        None,
        "step reserve_inventory compensated",
        HistoryEntry(kind=K.STEP_COMPENSATED, step="reserve_inventory"),
    ),
    (
        "transition",
        None,
        None,
        "saga COMPENSATED",
        HistoryEntry(kind=K.SAGA_ENDED, outcome="COMPENSATED"),
    ),
    (
        "transition",
        "authorize_payment",
        None,
        "saga FAILED: authorize_payment failed after 3 attempts: boom",
        HistoryEntry(
            kind=K.SAGA_ENDED,
            outcome="FAILED",
            reason="authorize_payment failed after 3 attempts: boom",
        ),
    ),
    (
        "transition",
        "notify_customer",
        None,
        "something only a newer version wrote",
        HistoryEntry(
            kind=K.TRANSITION, step="notify_customer", note="something only a newer version wrote"
        ),
    ),
]
