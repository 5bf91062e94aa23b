"""The stream registry in the database: what was registered survives a restart and is resumed at start-up.

The source URL is stored as given, credentials included (the reader needs them to reconnect after a restart);
the database file is the service's own state and must be protected like its configuration.
"""

from __future__ import annotations

import json
import time
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
    ]


STREAMS = sa.Table("streams", sa.MetaData(), *_stream_columns())


def _streams_v1(op: Operations) -> None:
    op.create_table("streams", *_stream_columns())
    op.create_index("streams_by_created", "streams", ["created_at"])


STREAMS_MIGRATIONS = (("streams_v1", (_streams_v1,)),)


@dataclass(frozen=True, slots=True)
class StreamRecord:
    id: str
    name: str
    url: str
    events: EventPolicyOverrides
    loop: bool
    created_at: float


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
                )
            )

    def all(self) -> list[StreamRecord]:
        rows = self.db.query(sa.select(STREAMS).order_by(STREAMS.c.created_at, STREAMS.c.id))
        return [
            StreamRecord(
                id=row.id,
                name=row.name,
                url=row.url,
                events=EventPolicyOverrides(**json.loads(row.events_json or "{}")),
                loop=bool(row.loop),
                created_at=row.created_at,
            )
            for row in rows
        ]

    def delete(self, stream_id: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute(sa.delete(STREAMS).where(STREAMS.c.id == stream_id)).rowcount > 0
