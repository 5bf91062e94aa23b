"""The stream registry in the database: what was registered survives a restart and is resumed at start-up.

The source URL is stored as given, credentials included (the reader needs them to reconnect after a restart);
the database file is the service's own state and must be protected like its configuration.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from alembic.operations import Operations

from service.live.schemas import EventPolicyOverrides
from service.storage import Database, apply_migrations


def _stream_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("loop", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Double, nullable=False),
        # Cluster mode: the live worker (Ray actor) that runs the stream; NULL on a single node.
        sa.Column("worker", sa.Integer),
    ]


STREAMS = sa.Table("streams", sa.MetaData(), *_stream_columns())


def _streams_v1(op: Operations) -> None:
    op.create_table("streams", *(c for c in _stream_columns() if c.name != "worker"))
    op.create_index("streams_by_created", "streams", ["created_at"])


def _streams_worker_v1(op: Operations) -> None:
    op.add_column("streams", next(c for c in _stream_columns() if c.name == "worker"))
    op.create_index("streams_by_worker", "streams", ["worker"])


STREAMS_MIGRATIONS = (("streams_v1", (_streams_v1,)), ("streams_worker_v1", (_streams_worker_v1,)))


@dataclass(frozen=True, slots=True)
class StreamRecord:
    id: str
    name: str
    url: str
    events: EventPolicyOverrides
    loop: bool
    created_at: float
    worker: int | None = None


class StreamStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        apply_migrations(db, STREAMS_MIGRATIONS)

    def add(self, record: StreamRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                sa.insert(STREAMS).values(
                    id=record.id,
                    name=record.name,
                    url=record.url,
                    events_json=record.events.model_dump_json(exclude_none=True),
                    loop=int(record.loop),
                    created_at=record.created_at or time.time(),
                    worker=record.worker,
                )
            )

    def add_to_least_loaded(self, record: StreamRecord, workers: Sequence[int]) -> StreamRecord:
        """Cluster mode: store the stream assigned to whichever of the live `workers` runs fewest streams."""
        with self.db.transaction() as conn:
            worker = _least_loaded(_assignment_counts(conn, self.db), workers)
            assigned = dataclasses.replace(record, worker=worker)
            conn.execute(
                sa.insert(STREAMS).values(
                    id=assigned.id,
                    name=assigned.name,
                    url=assigned.url,
                    events_json=assigned.events.model_dump_json(exclude_none=True),
                    loop=int(assigned.loop),
                    created_at=assigned.created_at or time.time(),
                    worker=worker,
                )
            )
        return assigned

    def count_of_workers(self, workers: Collection[int]) -> int:
        """How many streams are assigned to any of `workers` (a cheap read, no lock)."""
        return int(
            self.db.query(
                sa.select(sa.func.count()).select_from(STREAMS).where(STREAMS.c.worker.in_(list(workers)))
            )[0][0]
        )

    def reassign(self, lost: Collection[int], survivors: Sequence[int]) -> list[StreamRecord]:
        """Cluster mode: move every stream of the `lost` live workers to the least loaded of `survivors`, one
        by one in registration order. Returns the moved streams with their new worker.

        Safe to call from several API replicas at once: the table lock taken by every assignment (here and in
        `add_to_least_loaded`) lets one decide at a time, and each move is conditional on the stream still
        belonging to the lost worker, so a replica that comes second finds nothing left to move."""
        if not lost or not survivors:
            return []
        moved: list[str] = []
        with self.db.transaction() as conn:
            counts = _assignment_counts(conn, self.db)
            rows = conn.execute(
                sa.select(STREAMS.c.id, STREAMS.c.worker)
                .where(STREAMS.c.worker.in_(list(lost)))
                .order_by(STREAMS.c.created_at, STREAMS.c.id)
            ).all()
            for stream_id, old in rows:
                new = _least_loaded(counts, survivors)
                if move_stream(conn, stream_id, old, new):
                    counts[new] = counts.get(new, 0) + 1
                    moved.append(stream_id)
        if not moved:
            return []
        records = {r.id: r for r in self._records(sa.select(STREAMS).where(STREAMS.c.id.in_(moved)))}
        return [records[sid] for sid in moved if sid in records]

    def get(self, stream_id: str) -> StreamRecord | None:
        rows = self._records(sa.select(STREAMS).where(STREAMS.c.id == stream_id))
        return rows[0] if rows else None

    def of_worker(self, worker: int) -> list[StreamRecord]:
        return self._records(
            sa.select(STREAMS).where(STREAMS.c.worker == worker).order_by(STREAMS.c.created_at, STREAMS.c.id)
        )

    def all(self) -> list[StreamRecord]:
        return self._records(sa.select(STREAMS).order_by(STREAMS.c.created_at, STREAMS.c.id))

    def _records(self, statement: sa.Select) -> list[StreamRecord]:
        rows = self.db.query(statement)
        return [
            StreamRecord(
                id=row.id,
                name=row.name,
                url=row.url,
                events=EventPolicyOverrides(**json.loads(row.events_json or "{}")),
                loop=bool(row.loop),
                created_at=row.created_at,
                worker=row.worker,
            )
            for row in rows
        ]

    def delete(self, stream_id: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute(sa.delete(STREAMS).where(STREAMS.c.id == stream_id)).rowcount > 0


def move_stream(conn: sa.Connection, stream_id: str, old: int, new: int) -> bool:
    """Cluster mode: assign the stream to live worker `new` if it is still `old`'s; whether it moved."""
    return (
        conn.execute(
            sa.update(STREAMS).where(STREAMS.c.id == stream_id, STREAMS.c.worker == old).values(worker=new)
        ).rowcount
        > 0
    )


def _assignment_counts(conn: sa.Connection, db: Database) -> dict[int, int]:
    """Streams per live worker, inside an assignment's transaction."""
    if db.dialect == "postgresql":
        # One assignment decision at a time across API replicas (SQLite's write transactions already are).
        conn.execute(sa.text("LOCK TABLE streams IN SHARE ROW EXCLUSIVE MODE"))
    return dict(
        conn.execute(
            sa.select(STREAMS.c.worker, sa.func.count())
            .where(STREAMS.c.worker.is_not(None))
            .group_by(STREAMS.c.worker)
        ).all()
    )


def _least_loaded(counts: dict[int, int], workers: Sequence[int]) -> int:
    return min(workers, key=lambda w: (counts.get(w, 0), w))
