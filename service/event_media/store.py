"""Where event media lives: files under `<data dir>/media/` and one row per event in the `event_media` table.

`<event id>.jpg` is the snapshot (replaced atomically when the event reaches a new peak), `<event id>.mp4` the clip
once finished (written as `<event id>.mp4.part` while it records, renamed when complete, so a clip that is served
is always whole). The row says what exists: `snapshot_bytes` (0 = none), `clip_status`
(`recording` / `ready` / `failed` / `expired`) and `clip_bytes`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.operations import Operations

from service.storage import EVENTS, Database, apply_migrations

logger = logging.getLogger(__name__)


def _media_columns() -> list[sa.Column]:
    return [
        sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("snapshot_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("clip_status", sa.Text, nullable=False, server_default="recording"),
        sa.Column("clip_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("clip_codec", sa.Text),
    ]


EVENT_MEDIA = sa.Table("event_media", sa.MetaData(), *_media_columns())


def _event_media_v1(op: Operations) -> None:
    op.create_table("event_media", *_media_columns())
    op.create_index("event_media_by_created", "event_media", ["created_at"])


EVENT_MEDIA_MIGRATIONS = (("event_media_v1", (_event_media_v1,)),)

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
        apply_migrations(db, EVENT_MEDIA_MIGRATIONS)

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
                self.db.insert_ignoring_duplicates(EVENT_MEDIA).values(
                    event_id=event_id, stream_id=stream_id, created_at=time.time()
                )
            )

    def set_snapshot(self, event_id: int, size: int) -> None:
        with self.db.transaction() as conn:
            conn.execute(sa.update(EVENT_MEDIA).where(_C.event_id == event_id).values(snapshot_bytes=size))

    def finish_clip(self, event_id: int, status: ClipStatus, size: int = 0, codec: str | None = None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                sa.update(EVENT_MEDIA)
                .where(_C.event_id == event_id)
                .values(clip_status=status, clip_bytes=size, clip_codec=codec)
            )

    def get(self, event_id: int) -> MediaRecord | None:
        rows = self.db.query(sa.select(*_RECORD).where(_C.event_id == event_id))
        return MediaRecord(*rows[0]) if rows else None

    def of_events(self, event_ids: list[int]) -> dict[int, MediaRecord]:
        if not event_ids:
            return {}
        rows = self.db.query(sa.select(*_RECORD).where(_C.event_id.in_(event_ids)))
        return {row[0]: MediaRecord(*row) for row in rows}

    def total_bytes(self) -> int:
        total = sa.func.coalesce(sa.func.sum(_C.snapshot_bytes + _C.clip_bytes), 0)
        return int(self.db.query(sa.select(total))[0][0])

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
                sa.update(EVENT_MEDIA)
                .where(_C.event_id == event_id)
                .values(snapshot_bytes=0, clip_bytes=0, clip_status="expired")
            )

    def delete(self, event_id: int) -> None:
        """The event is gone: its files and row with it."""
        self._remove_files(event_id)
        with self.db.transaction() as conn:
            conn.execute(sa.delete(EVENT_MEDIA).where(_C.event_id == event_id))

    def orphans(self) -> list[int]:
        """Media rows whose event no longer exists."""
        rows = self.db.query(
            sa.select(_C.event_id)
            .select_from(EVENT_MEDIA.outerjoin(EVENTS, EVENTS.c.id == _C.event_id))
            .where(EVENTS.c.id.is_(None))
        )
        return [int(r[0]) for r in rows]

    def older_than(self, cutoff: float) -> list[int]:
        rows = self.db.query(sa.select(_C.event_id).where(_C.created_at < cutoff, *_FINISHED_WITH_FILES))
        return [int(r[0]) for r in rows]

    def oldest_with_files(self, limit: int) -> list[tuple[int, int]]:
        """(event id, bytes) of finished media, oldest first."""
        rows = self.db.query(
            sa.select(_C.event_id, _C.snapshot_bytes + _C.clip_bytes)
            .where(*_FINISHED_WITH_FILES)
            .order_by(_C.created_at, _C.event_id)
            .limit(limit)
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    def fail_recording(self, stream_ids: Sequence[str] | None = None) -> int:
        """Clips still marked recording (of `stream_ids`, or all) are failed: whoever recorded them is gone (a
        crash, or a lost cluster worker, whose partial files stayed on its machine). Returns how many."""
        where = [_C.clip_status == "recording"]
        if stream_ids is not None:
            where.append(_C.stream_id.in_(list(stream_ids)))
        with self.db.transaction() as conn:
            return conn.execute(
                sa.update(EVENT_MEDIA).where(*where).values(clip_status="failed", clip_bytes=0)
            ).rowcount

    def recover(self, stream_ids: Sequence[str] | None = None) -> int:
        """After a crash: clips left recording (of `stream_ids`, or all) are failed (their partial files removed),
        and files no row mentions are deleted. Returns how many clips were failed."""
        failed = self.fail_recording(stream_ids)
        known = {int(r[0]) for r in self.db.query(sa.select(_C.event_id))}
        for path in self.root.iterdir():
            stem = path.name.split(".", 1)[0]
            if path.name.endswith((".part", ".tmp")) or not stem.isdigit() or int(stem) not in known:
                logger.info("removing leftover media file %s", path.name)
                path.unlink(missing_ok=True)
        return failed


_C = EVENT_MEDIA.c
_RECORD = (_C.event_id, _C.stream_id, _C.created_at, _C.snapshot_bytes, _C.clip_status, _C.clip_bytes)
_FINISHED_WITH_FILES = (_C.clip_status != "recording", sa.or_(_C.snapshot_bytes > 0, _C.clip_bytes > 0))
