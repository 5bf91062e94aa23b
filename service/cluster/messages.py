"""The live messages of every stream in the shared store, so any API replica can serve any stream's WebSocket
and a stream resumed on another machine goes on from its last snippet.

Each stream's messages are written by the one live worker the store assigns it to (a worker's writes are fenced
by that assignment: `MessageLog.append(owner=...)`), numbered `seq` 0, 1, 2, ... in the order they were produced
(a worker that takes the stream over goes on from the stored maximum), and committed in that order; a reader that
keeps, per stream, the last `seq` it has seen therefore never skips one. Old messages are pruned to the newest
`keep` per stream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from alembic.operations import Operations

from service.live.store import STREAMS
from service.storage import Database, apply_migrations

logger = logging.getLogger(__name__)


def _message_columns() -> list[sa.Column]:
    return [
        sa.Column("stream_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        # The snippet the message scores; NULL for state changes and notices.
        sa.Column("snippet_index", sa.BigInteger),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    ]


LIVE_MESSAGES = sa.Table("live_messages", sa.MetaData(), *_message_columns())


def _live_messages_v1(op: Operations) -> None:
    op.create_table("live_messages", *_message_columns())


MESSAGES_MIGRATIONS = (("live_messages_v1", (_live_messages_v1,)),)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    stream_id: str
    seq: int
    snippet_index: int | None
    text: str


class MessageLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        apply_migrations(db, MESSAGES_MIGRATIONS)

    def append(
        self, messages: Sequence[StoredMessage], created_at: float, owner: int | None = None
    ) -> set[str]:
        """Store `messages`; with `owner` (a live worker's index), only those of streams still assigned to it.
        Returns the streams whose messages were dropped for that reason.

        The ownership check locks the streams' rows (FOR SHARE) until the messages are committed, so a worker
        whose streams were re-assigned (it was presumed dead, or is a late restart) cannot write after the
        move: the new owner numbers on from what was stored before it and never meets a duplicate `seq`."""
        if not messages:
            return set()
        dropped: set[str] = set()
        with self.db.transaction() as conn:
            if owner is not None:
                wanted = {m.stream_id for m in messages}
                owned = set(
                    conn.execute(
                        sa.select(STREAMS.c.id)
                        .where(STREAMS.c.id.in_(wanted), STREAMS.c.worker == owner)
                        .with_for_update(read=True)
                    ).scalars()
                )
                dropped = wanted - owned
                messages = [m for m in messages if m.stream_id in owned]
            if messages:
                conn.execute(
                    sa.insert(LIVE_MESSAGES),
                    [
                        {
                            "stream_id": m.stream_id,
                            "seq": m.seq,
                            "snippet_index": m.snippet_index,
                            "text": m.text,
                            "created_at": created_at,
                        }
                        for m in messages
                    ],
                )
        return dropped

    def next_seq(self, stream_id: str) -> int:
        top = self.db.query(
            sa.select(sa.func.max(LIVE_MESSAGES.c.seq)).where(LIVE_MESSAGES.c.stream_id == stream_id)
        )[0][0]
        return 0 if top is None else int(top) + 1

    def next_snippet(self, stream_id: str) -> int:
        """The index a resumed stream's next snippet gets: one past the highest stored."""
        top = self.db.query(
            sa.select(sa.func.max(LIVE_MESSAGES.c.snippet_index)).where(
                LIVE_MESSAGES.c.stream_id == stream_id
            )
        )[0][0]
        return 0 if top is None else int(top) + 1

    def latest(self, stream_id: str, count: int) -> list[StoredMessage]:
        """The newest `count` messages of a stream, oldest first."""
        rows = self.db.query(
            sa.select(LIVE_MESSAGES)
            .where(LIVE_MESSAGES.c.stream_id == stream_id)
            .order_by(LIVE_MESSAGES.c.seq.desc())
            .limit(count)
        )
        return [_message(row) for row in reversed(rows)]

    def after(self, cursors: dict[str, int], limit: int = 5000) -> list[StoredMessage]:
        """Messages with `seq` above each stream's cursor, in order per stream."""
        if not cursors:
            return []
        c = LIVE_MESSAGES.c
        rows = self.db.query(
            sa.select(LIVE_MESSAGES)
            .where(sa.or_(*(sa.and_(c.stream_id == sid, c.seq > seq) for sid, seq in cursors.items())))
            .order_by(c.stream_id, c.seq)
            .limit(limit)
        )
        return [_message(row) for row in rows]

    def prune(self, stream_id: str, keep: int) -> int:
        with self.db.transaction() as conn:
            top = conn.execute(
                sa.select(sa.func.max(LIVE_MESSAGES.c.seq)).where(LIVE_MESSAGES.c.stream_id == stream_id)
            ).scalar()
            if top is None:
                return 0
            return conn.execute(
                sa.delete(LIVE_MESSAGES).where(
                    LIVE_MESSAGES.c.stream_id == stream_id, LIVE_MESSAGES.c.seq <= int(top) - keep
                )
            ).rowcount

    def delete_stream(self, stream_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(sa.delete(LIVE_MESSAGES).where(LIVE_MESSAGES.c.stream_id == stream_id))


def _message(row: sa.Row) -> StoredMessage:
    return StoredMessage(row.stream_id, int(row.seq), row.snippet_index, row.text)
