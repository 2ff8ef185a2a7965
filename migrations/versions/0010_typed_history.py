"""saga history as data: typed columns instead of a sentence per entry

Revision ID: 0010
Revises: 0009

Each entry of ``sagas.saga_events`` gets typed columns (orchestrator/history.py); the
sentences stored so far are parsed once, here, by the patterns the engine wrote them
with. A sentence no pattern matches is kept whole in ``note``, which is what is shown
for it. The downgrade renders the sentences back from the columns.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "sagas.saga_events"

COLUMNS = (
    sa.Column("attempt", sa.Integer(), nullable=True),
    sa.Column("purpose", sa.String(16), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("message_type", sa.String(128), nullable=True),
    sa.Column("participant", sa.String(64), nullable=True),
    sa.Column("handler", sa.String(128), nullable=True),
    sa.Column("actor", sa.String(64), nullable=True),
    sa.Column("delay_s", sa.Float(), nullable=True),
    sa.Column("note", sa.Text(), nullable=True),
)

# An epilogue action is named by its command (CamelCase) or its local handler.
_COMMAND_OR_HANDLER = (
    "message_type = CASE WHEN m[1] ~ '^[A-Z]' THEN m[1] END, "
    "handler = CASE WHEN m[1] ~ '^[A-Z]' THEN NULL ELSE m[1] END"
)
_ATTEMPT_OUTCOME = "CASE WHEN m[{n}] LIKE 'no reply within %' THEN 'timeout' ELSE 'failed' END"

# (kind written then, pattern of its sentence, assignments from the match ``m``).
# Earlier patterns win: each UPDATE takes only the rows no pattern has matched yet.
PATTERNS: tuple[tuple[str, str, str], ...] = (
    (
        "command_sent",
        r"^(\S+) to (\S+) \((action|compensation|epilogue), attempt (\d+)\)$",
        "message_type = m[1], participant = m[2], purpose = m[3], attempt = m[4]::int",
    ),
    (
        "reply_received",
        r"^(\S+) \((succeeded|failed|rejected)(?:: (.*))?\)$",
        "message_type = m[1], outcome = m[2], reason = m[3]",
    ),
    (
        "stale_reply",
        r"^(\S+) ignored: not for the attempt in flight$",
        "message_type = m[1]",
    ),
    (
        "local_action",
        r"^(\S+) \((succeeded|failed|rejected)(?:: (.*))?\)$",
        "handler = m[1], outcome = m[2], reason = m[3], "
        "purpose = CASE WHEN e.step IS NULL THEN 'epilogue' ELSE 'action' END",
    ),
    ("admin_retry", r"^requested by (.*)$", "actor = m[1]"),
    ("admin_abort", r"^requested by (.*)$", "actor = m[1]"),
    ("transition", r"^(saga started)$", "kind = 'saga_started', step = NULL"),
    ("transition", r"^step (\S+) succeeded$", "kind = 'step_succeeded', step = m[1]"),
    ("transition", r"^step (\S+) compensated$", "kind = 'step_compensated', step = m[1]"),
    (
        "transition",
        r"^step (\S+) rejected: (.*)$",
        "kind = 'step_rejected', step = m[1], reason = m[2]",
    ),
    (
        "transition",
        r"^(\S+) \(compensate\) attempt (\d+) failed: (.*)$",
        "kind = 'attempt_failed', step = m[1], purpose = 'compensation', "
        f"attempt = m[2]::int, reason = m[3], outcome = {_ATTEMPT_OUTCOME.format(n=3)}",
    ),
    (
        "transition",
        r"^(\S+) \(epilogue\) attempt (\d+) failed: (.*)$",
        f"kind = 'attempt_failed', step = NULL, purpose = 'epilogue', {_COMMAND_OR_HANDLER}, "
        f"attempt = m[2]::int, reason = m[3], outcome = {_ATTEMPT_OUTCOME.format(n=3)}",
    ),
    (
        "transition",
        r"^(\S+) attempt (\d+) failed: (.*)$",
        "kind = 'attempt_failed', step = m[1], purpose = 'action', "
        f"attempt = m[2]::int, reason = m[3], outcome = {_ATTEMPT_OUTCOME.format(n=3)}",
    ),
    (
        "transition",
        r"^retrying in ([0-9.e+-]+)s$",
        "kind = 'retry_scheduled', delay_s = m[1]::float8",
    ),
    ("transition", r"^retry attempt (\d+)$", "kind = 'retry_started', attempt = m[1]::int"),
    ("transition", r"^(operator retry): fresh attempt budget$", "kind = 'saga_resumed'"),
    ("transition", r"^(operator abort): compensating$", "kind = 'saga_aborted'"),
    (
        "transition",
        r"^saga (COMPLETED|COMPENSATED)$",
        "kind = 'saga_ended', step = NULL, outcome = m[1]",
    ),
    (
        "transition",
        r"^saga (FAILED): (.*)$",
        "kind = 'saga_ended', step = NULL, outcome = m[1], reason = m[2]",
    ),
    (
        "transition",
        r"^(\S+) done$",
        f"kind = 'epilogue_done', step = NULL, purpose = 'epilogue', {_COMMAND_OR_HANDLER}",
    ),
)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("saga_events", column, schema="sagas")
    # Every row starts as its sentence; a row a pattern parses loses it.
    op.execute(f"UPDATE {TABLE} SET note = detail")
    for kind, pattern, assignments in PATTERNS:
        op.execute(
            sa.text(
                f"UPDATE {TABLE} AS e SET {assignments}, note = NULL "
                "FROM (SELECT id, regexp_match(detail, :pattern) AS m"
                f"        FROM {TABLE} WHERE kind = :kind AND note IS NOT NULL) AS p "
                "WHERE e.id = p.id AND p.m IS NOT NULL"
            ).bindparams(kind=kind, pattern=pattern)
        )
    op.drop_column("saga_events", "detail", schema="sagas")


# The sentences, from the columns (orchestrator/history.py ``describe``, frozen here).
_ACTION = "coalesce(message_type, handler)"
_RESULT = "outcome || coalesce(': ' || reason, '')"
RENDER = f"""
CASE
  WHEN note IS NOT NULL THEN note
  WHEN kind = 'command_sent'
    THEN message_type || ' to ' || participant || ' (' || purpose || ', attempt ' || attempt || ')'
  WHEN kind = 'reply_received' THEN message_type || ' (' || {_RESULT} || ')'
  WHEN kind = 'stale_reply' THEN message_type || ' ignored: not for the attempt in flight'
  WHEN kind = 'local_action' THEN handler || ' (' || {_RESULT} || ')'
  WHEN kind IN ('admin_retry', 'admin_abort') THEN 'requested by ' || actor
  WHEN kind = 'saga_started' THEN 'saga started'
  WHEN kind = 'step_succeeded' THEN 'step ' || step || ' succeeded'
  WHEN kind = 'step_compensated' THEN 'step ' || step || ' compensated'
  WHEN kind = 'step_rejected' THEN 'step ' || step || ' rejected: ' || reason
  WHEN kind = 'epilogue_done' THEN {_ACTION} || ' done'
  WHEN kind = 'attempt_failed' THEN
    CASE purpose
      WHEN 'epilogue' THEN {_ACTION} || ' (epilogue)'
      WHEN 'compensation' THEN step || ' (compensate)'
      ELSE step
    END || ' attempt ' || attempt || ' failed: ' || reason
  WHEN kind = 'retry_scheduled' THEN 'retrying in ' || delay_s || 's'
  WHEN kind = 'retry_started' THEN 'retry attempt ' || attempt
  WHEN kind = 'saga_resumed' THEN 'operator retry: fresh attempt budget'
  WHEN kind = 'saga_aborted' THEN 'operator abort: compensating'
  WHEN kind = 'saga_ended' THEN 'saga ' || outcome || coalesce(': ' || reason, '')
  WHEN kind = 'definition_refused' THEN 'not driven: ' || reason
END
"""

_OLD_KINDS = (
    "'command_sent', 'reply_received', 'stale_reply', 'local_action', 'admin_retry', 'admin_abort'"
)


def downgrade() -> None:
    op.add_column("saga_events", sa.Column("detail", sa.Text(), nullable=True), schema="sagas")
    op.execute(f"UPDATE {TABLE} SET detail = left(coalesce({RENDER}, kind), 2000)")
    # The state machine's moves were all one kind before.
    op.execute(f"UPDATE {TABLE} SET kind = 'transition' WHERE kind NOT IN ({_OLD_KINDS})")
    op.alter_column("saga_events", "detail", nullable=False, schema="sagas")
    for column in COLUMNS:
        op.drop_column("saga_events", column.name, schema="sagas")
