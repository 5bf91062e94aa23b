"""Where event media lives: one row per event in the `event_media` table, and the media themselves either as files
under `<data dir>/media/` (a single node) or, in a cluster (`shared=True`), in the shared database.

Files: `<event id>.jpg` is the snapshot (replaced atomically when the event reaches a new peak), `<event id>.mp4`
the clip once finished (written as `<event id>.mp4.part` while it records, renamed when complete, so a clip that
is served is always whole).

Shared (cluster mode): the snapshot and the finished clip are stored in `event_media_parts` in parts of
`MEDIA_PART_BYTES`, as the cluster's uploads are (`job_uploads`): the database is the one thing every API replica
reaches, and it outlives the live worker (and the machine) that recorded them. A clip is still encoded into a
local `.part` file (the worker's scratch directory) and stored in one transaction with its `ready` state once
finished, so a clip that is served is always whole; the snapshot is replaced in one transaction too.

The row says what exists: `snapshot_bytes` (0 = none), `clip_status` (`recording` / `ready` / `failed` /
`expired`) and `clip_bytes`; retention (`expire`, `delete`) removes files and stored parts alike.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.operations import Operations

from service.event_media.encoding import write_atomically
from service.storage import EVENTS, Database, apply_migrations, insert_parts

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


def _part_columns() -> list[sa.Column]:
    """Fresh columns of `event_media_parts`: a cluster's snapshots (`kind` `snapshot`) and finished clips (`clip`)
    in parts of `MEDIA_PART_BYTES`, deleted with their event's media row."""
    return [
        sa.Column(
            "event_id",
            sa.BigInteger,
            sa.ForeignKey("event_media.event_id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    ]


_MEDIA_METADATA = sa.MetaData()
EVENT_MEDIA = sa.Table("event_media", _MEDIA_METADATA, *_media_columns())
EVENT_MEDIA_PARTS = sa.Table("event_media_parts", _MEDIA_METADATA, *_part_columns())

# 1 MiB, as the uploads' parts: one short statement each, and what a write or a read holds in memory.
MEDIA_PART_BYTES = 1 << 20


def _event_media_v1(op: Operations) -> None:
    op.create_table("event_media", *_media_columns())
    op.create_index("event_media_by_created", "event_media", ["created_at"])


def _event_media_v2(op: Operations) -> None:
    op.create_table("event_media_parts", *_part_columns())
    if op.get_bind().dialect.name == "postgresql":
        # JPEG and H.264 are compressed already: parts are stored as they are (out of line), not tried with pglz.
        op.execute("ALTER TABLE event_media_parts ALTER COLUMN data SET STORAGE EXTERNAL")


EVENT_MEDIA_MIGRATIONS = (
    ("event_media_v1", (_event_media_v1,)),
    ("event_media_v2", (_event_media_v2,)),
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
    """Event media rows and their bytes. `root`: the media files (single node), or in `shared` mode (a cluster)
    only the scratch directory where clips are encoded before they are stored in the database."""

    def __init__(self, db: Database, root: Path, *, shared: bool = False) -> None:
        self.db = db
        self.root = root
        self.shared = shared
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

    def save_snapshot(self, event_id: int, data: bytes) -> None:
        """Store (or replace) the event's JPEG snapshot: readers see the old one or the new one, never a mix.
        Nothing is stored for an event whose media row is gone (deleted). StorageError if the database fails."""
        if not self.shared:
            write_atomically(self.snapshot_path(event_id), data)
            self.set_snapshot(event_id, len(data))
            return
        with self.db.transaction() as conn:
            found = conn.execute(
                sa.update(EVENT_MEDIA).where(_C.event_id == event_id).values(snapshot_bytes=len(data))
            ).rowcount
            conn.execute(sa.delete(EVENT_MEDIA_PARTS).where(*_parts_of(event_id, "snapshot")))
            if found:
                insert_parts(
                    conn,
                    EVENT_MEDIA_PARTS,
                    io.BytesIO(data),
                    MEDIA_PART_BYTES,
                    event_id=event_id,
                    kind="snapshot",
                )

    def save_clip(self, event_id: int, partial: Path, codec: str) -> bool:
        """The finished clip, encoded into `partial`, becomes the event's served clip (`ready`): renamed into
        place, or in `shared` mode stored part by part in one transaction with its state (never the whole clip in
        memory) and the local file removed. False, and nothing kept, when the event was deleted meanwhile.
        OSError or StorageError on failure (the partial file is left to the caller)."""
        size = partial.stat().st_size
        if not self.shared:
            final = self.clip_path(event_id)
            os.replace(partial, final)
            if self.get(event_id) is None:
                final.unlink(missing_ok=True)  # the event was deleted while its clip recorded
                return False
            self.finish_clip(event_id, "ready", size, codec)
            return True
        with self.db.transaction() as conn:
            found = conn.execute(
                sa.update(EVENT_MEDIA)
                .where(_C.event_id == event_id)
                .values(clip_status="ready", clip_bytes=size, clip_codec=codec)
            ).rowcount
            if found:
                conn.execute(sa.delete(EVENT_MEDIA_PARTS).where(*_parts_of(event_id, "clip")))
                with partial.open("rb") as clip:
                    insert_parts(
                        conn, EVENT_MEDIA_PARTS, clip, MEDIA_PART_BYTES, event_id=event_id, kind="clip"
                    )
        partial.unlink(missing_ok=True)
        return bool(found)

    def read_snapshot(self, event_id: int) -> bytes | None:
        """The stored snapshot (`shared` mode), or None when there is none."""
        rows = self.db.query(
            sa.select(EVENT_MEDIA_PARTS.c.data)
            .where(*_parts_of(event_id, "snapshot"))
            .order_by(EVENT_MEDIA_PARTS.c.part)
        )
        return b"".join(bytes(row[0]) for row in rows) if rows else None

    def read_clip(self, event_id: int, start: int, stop: int) -> Iterator[bytes]:
        """Bytes `start` to `stop` (exclusive) of the stored clip (`shared` mode), one part read at a time. Stops
        early when the clip is removed meanwhile (retention, deletion), logged: the reader gets a short body."""
        first, last = start // MEDIA_PART_BYTES, (stop - 1) // MEDIA_PART_BYTES
        for part in range(first, last + 1):
            rows = self.db.query(
                sa.select(EVENT_MEDIA_PARTS.c.data).where(
                    *_parts_of(event_id, "clip"), EVENT_MEDIA_PARTS.c.part == part
                )
            )
            if not rows:
                logger.warning("event %d: its clip was removed while it was being read", event_id)
                return
            base = part * MEDIA_PART_BYTES
            yield bytes(rows[0][0][max(0, start - base) : stop - base])

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
        """Retention: the files (or stored parts) go, the row stays to say so (the event itself is kept)."""
        self._remove_files(event_id)
        with self.db.transaction() as conn:
            conn.execute(sa.delete(EVENT_MEDIA_PARTS).where(EVENT_MEDIA_PARTS.c.event_id == event_id))
            conn.execute(
                sa.update(EVENT_MEDIA)
                .where(_C.event_id == event_id)
                .values(snapshot_bytes=0, clip_bytes=0, clip_status="expired")
            )

    def delete(self, event_id: int) -> None:
        """The event is gone: its files (or stored parts) and row with it."""
        self._remove_files(event_id)
        with self.db.transaction() as conn:
            conn.execute(sa.delete(EVENT_MEDIA_PARTS).where(EVENT_MEDIA_PARTS.c.event_id == event_id))
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


def _parts_of(event_id: int, kind: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (EVENT_MEDIA_PARTS.c.event_id == event_id, EVENT_MEDIA_PARTS.c.kind == kind)


_FINISHED_WITH_FILES = (_C.clip_status != "recording", sa.or_(_C.snapshot_bytes > 0, _C.clip_bytes > 0))
