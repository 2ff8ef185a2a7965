"""Remembers which messages a consumer already processed."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import LargeBinary, String, Table, Uuid, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from sagaway.outbox.envelope import Envelope


class Inbox:
    """Deduplicates deliveries per consumer by ``message_id``."""

    def __init__(self, table: Table, consumer: str) -> None:
        self._consumer = consumer
        self._record_many = (
            insert(table)
            .from_select(
                ["consumer", "message_id", "message_type", "digest"],
                select(
                    literal(consumer, String).label("consumer"),
                    func.unnest(bindparam("ids", type_=ARRAY(Uuid))).label("message_id"),
                    func.unnest(bindparam("types", type_=ARRAY(String))).label("message_type"),
                    func.unnest(bindparam("digests", type_=ARRAY(LargeBinary))).label("digest"),
                ),
            )
            .on_conflict_do_nothing(index_elements=["consumer", "message_id"])
            .returning(table.c.message_id)
        )
        self._recorded_digests = select(table.c.message_id, table.c.digest).where(
            table.c.consumer == consumer,
            table.c.message_id == func.any(bindparam("ids", type_=ARRAY(Uuid))),
        )

    @property
    def consumer(self) -> str:
        """The consumer name the records are kept under."""
        return self._consumer

    async def record(
        self, session: AsyncSession, envelope: Envelope, digest: bytes | None = None
    ) -> bool:
        """Record ``envelope`` as processed in the current transaction.

        Returns False when it was processed before. A concurrent delivery of the same
        message waits on the primary key until the first transaction ends, then sees
        the conflict, so two consumers can never both apply it.
        """
        digests = None if digest is None else [digest]
        return envelope.message_id in await self.record_many(session, [envelope], digests)

    async def record_many(
        self,
        session: AsyncSession,
        envelopes: Sequence[Envelope],
        digests: Sequence[bytes] | None = None,
    ) -> set[uuid.UUID]:
        """Record a batch in one statement; returns the ids not processed before.

        ``digests`` (one per envelope, see :func:`body_digest`) are the hashes of the
        bodies as received; without them each envelope's serialisation is hashed.
        Rows go in ``message_id`` order, so two consumers recording overlapping batches
        (a redelivery) take the primary-key locks in the same order and cannot deadlock.
        """
        if not envelopes:
            return set()
        hashes = digests if digests is not None else [body_digest(e.to_bytes()) for e in envelopes]
        ordered = sorted(zip(envelopes, hashes, strict=True), key=lambda pair: pair[0].message_id)
        # Arrays unnested server-side: one statement text whatever the batch size, so
        # it is compiled and prepared once.
        result = await session.execute(
            self._record_many,
            {
                "ids": [e.message_id for e, _ in ordered],
                "types": [e.message_type for e, _ in ordered],
                "digests": [d for _, d in ordered],
            },
        )
        return {r.message_id for r in result}

    async def recorded_digests(
        self, session: AsyncSession, ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, bytes]:
        """The digests recorded for messages processed before (rows older than the
        digest column have none). Asked only about duplicates, to tell a redelivery
        from an id reused for other content, so the usual path never pays for it."""
        if not ids:
            return {}
        result = await session.execute(self._recorded_digests, {"ids": list(ids)})
        return {r.message_id: bytes(r.digest) for r in result if r.digest is not None}


def body_digest(body: bytes) -> bytes:
    """What identifies a message's content: a hash of the bytes it travelled as.

    A redelivery, or the relay publishing a row the handoff already sent, carries the
    very bytes its outbox row holds, so its digest is the same.
    """
    return hashlib.blake2b(body, digest_size=16).digest()
