"""Where event media lives: files under `<data dir>/media/` and one row per event in the `event_media` table.

`<event id>.jpg` is the snapshot (replaced atomically when the event reaches a new peak), `<event id>.mp4` the clip
once finished (written as `<event id>.mp4.part` while it records, renamed when complete, so a clip that is served
is always whole). The row says what exists: `snapshot_bytes` (0 = none), `clip_status`
(`recording` / `ready` / `failed` / `expired`) and `clip_bytes`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from service.storage import Database

logger = logging.getLogger(__name__)

_EVENT_MEDIA_V1 = (
    """
    CREATE TABLE event_media (
        event_id INTEGER PRIMARY KEY,
        stream_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        snapshot_bytes INTEGER NOT NULL DEFAULT 0,
        clip_status TEXT NOT NULL DEFAULT 'recording',
        clip_bytes INTEGER NOT NULL DEFAULT 0,
        clip_codec TEXT
    )
    """,
    "CREATE INDEX event_media_by_created ON event_media (created_at)",
)

ClipStatus = str  # recording | ready | failed | expired


@dataclass(frozen=True, slots=True)
class MediaRecord:
    event_id: int
    stream_id: str
    created_at: float
    snapshot_bytes: int
    clip_status: ClipStatus
    clip_bytes: int


class MediaStore:
    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        db.migrate("event_media_v1", _EVENT_MEDIA_V1)

    # -- paths ---------------------------------------------------------------------------------------------
    def snapshot_path(self, event_id: int) -> Path:
        return self.root / f"{event_id}.jpg"

    def clip_path(self, event_id: int) -> Path:
        return self.root / f"{event_id}.mp4"

    def partial_clip_path(self, event_id: int) -> Path:
        return self.root / f"{event_id}.mp4.part"

    # -- rows ----------------------------------------------------------------------------------------------
    def create(self, event_id: int, stream_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO event_media (event_id, stream_id, created_at) VALUES (?, ?, ?)",
                (event_id, stream_id, time.time()),
            )

    def set_snapshot(self, event_id: int, size: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE event_media SET snapshot_bytes = ? WHERE event_id = ?", (size, event_id))

    def finish_clip(self, event_id: int, status: ClipStatus, size: int = 0, codec: str | None = None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE event_media SET clip_status = ?, clip_bytes = ?, clip_codec = ? WHERE event_id = ?",
                (status, size, codec, event_id),
            )

    def get(self, event_id: int) -> MediaRecord | None:
        rows = self.db.query(
            "SELECT event_id, stream_id, created_at, snapshot_bytes, clip_status, clip_bytes FROM event_media "
            "WHERE event_id = ?",
            (event_id,),
        )
        return MediaRecord(*rows[0]) if rows else None

    def of_events(self, event_ids: list[int]) -> dict[int, MediaRecord]:
        if not event_ids:
            return {}
        marks = ",".join("?" * len(event_ids))
        rows = self.db.query(
            "SELECT event_id, stream_id, created_at, snapshot_bytes, clip_status, clip_bytes FROM event_media "
            f"WHERE event_id IN ({marks})",
            event_ids,
        )
        return {row[0]: MediaRecord(*row) for row in rows}

    def total_bytes(self) -> int:
        return int(
            self.db.query("SELECT COALESCE(SUM(snapshot_bytes + clip_bytes), 0) FROM event_media")[0][0]
        )

    # -- removal -------------------------------------------------------------------------------------------
    def _remove_files(self, event_id: int) -> None:
        for path in (
            self.snapshot_path(event_id),
            self.clip_path(event_id),
            self.partial_clip_path(event_id),
        ):
            path.unlink(missing_ok=True)

    def expire(self, event_id: int) -> None:
        """Retention: the files go, the row stays to say so (the event itself is kept)."""
        self._remove_files(event_id)
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE event_media SET snapshot_bytes = 0, clip_bytes = 0, clip_status = 'expired' "
                "WHERE event_id = ?",
                (event_id,),
            )

    def delete(self, event_id: int) -> None:
        """The event is gone: its files and row with it."""
        self._remove_files(event_id)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM event_media WHERE event_id = ?", (event_id,))

    def orphans(self) -> list[int]:
        """Media rows whose event no longer exists."""
        rows = self.db.query(
            "SELECT m.event_id FROM event_media m LEFT JOIN events e ON e.id = m.event_id WHERE e.id IS NULL"
        )
        return [int(r[0]) for r in rows]

    def older_than(self, cutoff: float) -> list[int]:
        rows = self.db.query(
            "SELECT event_id FROM event_media WHERE created_at < ? AND clip_status != 'recording' "
            "AND (snapshot_bytes > 0 OR clip_bytes > 0)",
            (cutoff,),
        )
        return [int(r[0]) for r in rows]

    def oldest_with_files(self, limit: int) -> list[tuple[int, int]]:
        """(event id, bytes) of finished media, oldest first."""
        rows = self.db.query(
            "SELECT event_id, snapshot_bytes + clip_bytes FROM event_media WHERE clip_status != 'recording' "
            "AND (snapshot_bytes > 0 OR clip_bytes > 0) ORDER BY created_at, event_id LIMIT ?",
            (limit,),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    def recover(self) -> int:
        """After a crash: clips left recording are failed (their partial files removed), and files no row
        mentions are deleted. Returns how many clips were failed."""
        with self.db.transaction() as conn:
            failed = conn.execute(
                "UPDATE event_media SET clip_status = 'failed', clip_bytes = 0 WHERE clip_status = 'recording'"
            ).rowcount
        known = {int(r[0]) for r in self.db.query("SELECT event_id FROM event_media")}
        for path in self.root.iterdir():
            stem = path.name.split(".", 1)[0]
            if path.name.endswith((".part", ".tmp")) or not stem.isdigit() or int(stem) not in known:
                logger.info("removing leftover media file %s", path.name)
                path.unlink(missing_ok=True)
        return failed
