"""The stream registry in SQLite: what was registered survives a restart and is resumed at start-up.

The source URL is stored as given, credentials included (the reader needs them to reconnect after a restart);
the database file is the service's own state and must be protected like its configuration.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from service.live.schemas import EventPolicyOverrides
from service.storage import Database

_STREAMS_V1 = (
    """
    CREATE TABLE streams (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        events_json TEXT NOT NULL DEFAULT '{}',
        loop INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    )
    """,
    "CREATE INDEX streams_by_created ON streams (created_at)",
)


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
        db.migrate("streams_v1", _STREAMS_V1)

    def add(self, record: StreamRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO streams (id, name, url, events_json, loop, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.url,
                    record.events.model_dump_json(exclude_none=True),
                    int(record.loop),
                    record.created_at or time.time(),
                ),
            )

    def all(self) -> list[StreamRecord]:
        rows = self.db.query("SELECT * FROM streams ORDER BY created_at, id")
        return [
            StreamRecord(
                id=row["id"],
                name=row["name"],
                url=row["url"],
                events=EventPolicyOverrides(**json.loads(row["events_json"] or "{}")),
                loop=bool(row["loop"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    def delete(self, stream_id: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM streams WHERE id = ?", (stream_id,)).rowcount > 0
