"""The service's embedded database: SQLite in WAL mode, one connection shared by the event loop and workers.

`Database` owns the connection and the schema migrations; each area of the service keeps a store class on top of it
(`JobStore` and `EventStore` here; later areas add theirs with `Database.migrate`). Every write is one short
transaction, so a crash leaves either the old or the new state, never half of a job.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The database cannot take a write now (the API answers these with a clear 5xx, not a crash)."""


class StorageBusy(StorageError):
    """Another process or connection holds the write lock for longer than the busy timeout."""


class StorageFull(StorageError):
    """The disk holding the database is full."""


def _translated(exc: sqlite3.Error) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StorageBusy("the database is locked by another process; retry shortly")
    if primary == sqlite3.SQLITE_FULL:
        return StorageFull("no space left on the disk that holds the database")
    return exc


class Database:
    """A thread-safe SQLite connection with named, idempotent migrations.

    Writes go through one connection under a lock; reads use a second, read-only connection, so in WAL mode a
    read never waits behind a write (or behind another process holding the write lock). A write that cannot get
    the lock within `busy_timeout_s` raises `StorageBusy`; one that finds the disk full raises `StorageFull`.
    """

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) in `transaction()`.
        self._conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._busy_ms = int(busy_timeout_s * 1000)
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite database {path} could not be switched to WAL mode (got {mode})")
        # NORMAL is crash-safe in WAL mode (a process crash loses nothing committed).
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        self._reader = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
        )
        self._reader.row_factory = sqlite3.Row
        self._reader.execute("PRAGMA query_only=ON")
        self._read_lock = threading.Lock()

    @contextmanager
    def transaction(self, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; `wait=False` fails at once (StorageBusy) instead of waiting for the lock."""
        with self._lock:
            try:
                if not wait:
                    self._conn.execute("PRAGMA busy_timeout = 0")
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translated(exc) from exc
            finally:
                if not wait:
                    self._conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _translated(exc) from exc
                raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _translated(exc) from exc

    def migrate(self, name: str, statements: Sequence[str]) -> bool:
        """Apply `statements` once under `name`; returns whether they ran now."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (name,)).fetchone():
                return False
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (name, time.time())
            )
        logger.info("database %s: applied migration %s", self.path, name)
        return True

    def journal_mode(self) -> str:
        return str(self.query("PRAGMA journal_mode")[0][0])

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._conn.close()


# ---------------------------------------------------------------------------------------------------------- jobs

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

_JOBS_V1 = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        progress REAL NOT NULL DEFAULT 0,
        filename TEXT NOT NULL,
        content_type TEXT,
        size_bytes INTEGER NOT NULL,
        upload_path TEXT,
        frame_scores INTEGER NOT NULL DEFAULT 0,
        video_json TEXT,
        result_json TEXT,
        error TEXT,
        error_code TEXT,
        note TEXT,
        attempts INTEGER NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX jobs_by_status ON jobs (status, created_at)",
    "CREATE INDEX jobs_by_created ON jobs (created_at)",
)

# Event snapshots on request (`POST /analyze?snapshots=true`), stored with the result.
_JOBS_V2 = (
    "ALTER TABLE jobs ADD COLUMN snapshots INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN snapshots_json TEXT",
)

_EVENTS_V1 = (
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source_kind TEXT NOT NULL,
        source_id TEXT NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL,
        peak_score REAL NOT NULL,
        mean_score REAL,
        dominant_category TEXT,
        categories_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    )
    """,
    "CREATE INDEX events_by_source ON events (source_kind, source_id, start_s)",
    "CREATE INDEX events_by_created ON events (created_at)",
)


class JobRecord(BaseModel):
    """One row of `jobs`; `result_json` stays a string so listing jobs never parses results."""

    id: str
    status: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0
    filename: str
    content_type: str | None = None
    size_bytes: int
    upload_path: str | None = None
    frame_scores: bool = False
    snapshots: bool = False
    video_json: str | None = None
    result_json: str | None = None
    snapshots_json: str | None = None
    error: str | None = None
    error_code: str | None = None
    note: str | None = None
    attempts: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class EventRecord(BaseModel):
    id: int | None = None
    source_kind: str
    source_id: str
    start_s: float
    end_s: float | None = None
    peak_score: float
    mean_score: float | None = None
    dominant_category: str | None = None
    categories: dict[str, float] = Field(default_factory=dict)
    created_at: float = 0.0


def _job(row: sqlite3.Row | None) -> JobRecord | None:
    if row is None:
        return None
    data = dict(row)
    data["frame_scores"] = bool(data["frame_scores"])
    data["snapshots"] = bool(data.get("snapshots", 0))
    return JobRecord(**data)


class EventStore:
    """Anomaly events, from analysed files (`source_kind="job"`) and, later, live streams."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("events_v1", _EVENTS_V1)

    @staticmethod
    def insert_many(conn: sqlite3.Connection, events: Sequence[EventRecord]) -> None:
        """Insert inside a caller's transaction, so events and what produced them commit together."""
        now = time.time()
        conn.executemany(
            "INSERT INTO events (source_kind, source_id, start_s, end_s, peak_score, mean_score, "
            "dominant_category, categories_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.source_kind,
                    e.source_id,
                    e.start_s,
                    e.end_s,
                    e.peak_score,
                    e.mean_score,
                    e.dominant_category,
                    json.dumps(e.categories),
                    e.created_at or now,
                )
                for e in events
            ],
        )

    def for_source(self, source_kind: str, source_id: str) -> list[EventRecord]:
        rows = self.db.query(
            "SELECT * FROM events WHERE source_kind = ? AND source_id = ? ORDER BY start_s, id",
            (source_kind, source_id),
        )
        records = []
        for row in rows:
            data = dict(row)
            data["categories"] = json.loads(data.pop("categories_json"))
            records.append(EventRecord(**data))
        return records


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Job results own their events (deleted with the job), so both tables must exist.
        db.migrate("events_v1", _EVENTS_V1)
        db.migrate("jobs_v1", _JOBS_V1)
        db.migrate("jobs_v2", _JOBS_V2)

    def create(self, record: JobRecord) -> JobRecord:
        data = record.model_dump()
        data["frame_scores"] = int(data["frame_scores"])
        data["snapshots"] = int(data["snapshots"])
        columns = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self.db.transaction() as conn:
            conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", tuple(data.values()))
        return record

    def get(self, job_id: str) -> JobRecord | None:
        rows = self.db.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0] if rows else None)

    def list(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[JobRecord], int]:
        """Newest first, without results (see `JobRecord.result_json`)."""
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        columns = (
            "id, status, created_at, started_at, finished_at, progress, filename, content_type, "
            "size_bytes, upload_path, frame_scores, snapshots, video_json, NULL AS result_json, error, error_code, "
            "note, attempts"
        )
        rows = self.db.query(
            f"SELECT {columns} FROM jobs {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        total = self.db.query(f"SELECT COUNT(*) FROM jobs {where}", params)[0][0]
        return [_job(row) for row in rows], int(total)  # type: ignore[misc]

    def ids_with_status(self, status: str) -> list[str]:
        return [
            row[0]
            for row in self.db.query(
                "SELECT id FROM jobs WHERE status = ? ORDER BY created_at, id", (status,)
            )
        ]

    def mark_running(self, job_id: str) -> JobRecord | None:
        """Claim a queued job for a worker; None if it is gone or no longer queued (deleted, cancelled)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, progress = 0 "
                "WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            if cur.rowcount == 0:
                return None
            return _job(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def set_progress(self, job_id: str, progress: float) -> None:
        """Advisory: never waits for a locked database (StorageBusy at once)."""
        with self.db.transaction(wait=False) as conn:
            conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'", (progress, job_id)
            )

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result_json: str | None = None,
        error: str | None = None,
        error_code: str | None = None,
        events: Sequence[EventRecord] = (),
        snapshots_json: str | None = None,
    ) -> bool:
        """Move a job to a terminal state with its result and events in one transaction."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status!r} is not a terminal job status")
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, result_json = ?, snapshots_json = ?, error = ?, "
                "error_code = ?, upload_path = NULL, "
                "progress = CASE WHEN ? = 'succeeded' THEN 1.0 ELSE progress END "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (status, time.time(), result_json, snapshots_json, error, error_code, status, job_id),
            )
            if cur.rowcount == 0:
                return False
            if events:
                EventStore.insert_many(conn, events)
        return True

    def requeue(self, job_id: str, note: str, *, refund_attempt: bool = False) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'queued', progress = 0, started_at = NULL, note = ?, "
                "attempts = attempts - ? WHERE id = ? AND status IN ('queued', 'running')",
                (note, 1 if refund_attempt else 0, job_id),
            )
            return cur.rowcount > 0

    def delete(self, job_id: str) -> JobRecord | None:
        with self.db.transaction() as conn:
            row = _job(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
            if row is None:
                return None
            conn.execute("DELETE FROM events WHERE source_kind = 'job' AND source_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return row

    def upload_paths_in_use(self) -> set[str]:
        rows = self.db.query("SELECT upload_path FROM jobs WHERE upload_path IS NOT NULL")
        return {row[0] for row in rows}
