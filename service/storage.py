"""The service's durable store through SQLAlchemy Core: embedded SQLite (WAL) by default, PostgreSQL when
`REFINEVAD_DATABASE_URL` names one (the shared store of a cluster).

`Database` owns the engine, the transactions and the schema migrations; each area of the service keeps a store
class on top of it (`JobStore` and `EventStore` here, `StreamStore` in `service.live.store`), with its tables as
SQLAlchemy Core `Table`s so one statement serves both backends. Every write is one short transaction, so a crash
leaves either the old or the new state, never half of a job.

Schema versions: each change of the schema is a named migration (`Database.migrate(name, steps)`), applied once
and recorded in `schema_migrations` in the same transaction as its DDL (both backends have transactional DDL, so
a failed migration leaves nothing). Steps are Alembic operations (`op.create_table`, `op.add_column`, ...), which
emit each dialect's DDL; migrations are append-only and never edited once released.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from pydantic import BaseModel, Field
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine, Row

logger = logging.getLogger(__name__)

# One migration step: Alembic operations bound to the migrating connection, or one SQL statement.
MigrationStep = Callable[[Operations], None] | str

# Any value; serialises concurrent migrations of several processes sharing one PostgreSQL database.
_MIGRATION_LOCK_KEY = 0x5EF1_7EAD


class StorageError(RuntimeError):
    """The database cannot take a write now (the API answers these with a clear 5xx, not a crash)."""


class StorageBusy(StorageError):
    """Another process or connection holds the write lock for longer than the busy timeout."""


class StorageFull(StorageError):
    """The disk holding the database is full."""


class StorageUnavailable(StorageError):
    """The database server cannot be reached (down, restarting, network)."""


# SQLite primary result codes (sqlite3.SQLITE_*), PostgreSQL SQLSTATEs.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_FULL = 5, 6, 13
_PG_BUSY = {"55P03", "40001", "40P01", "57014"}  # lock timeout, serialization failure, deadlock, cancelled
_PG_FULL = {"53100"}


def _translated(exc: sa.exc.DBAPIError) -> Exception:
    """The storage error a driver error stands for; other errors (bugs, constraint violations) pass through."""
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        primary = code & 0xFF
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StorageBusy("the database is locked by another process; retry shortly")
        if primary == _SQLITE_FULL:
            return StorageFull("no space left on the disk that holds the database")
        return exc
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _PG_BUSY:
        return StorageBusy("the database is locked by another transaction; retry shortly")
    if sqlstate in _PG_FULL:
        return StorageFull("no space left on the database server's disk")
    if (
        exc.connection_invalidated
        or (sqlstate or "").startswith("08")
        or (isinstance(exc, sa.exc.OperationalError) and sqlstate is None)
    ):
        return StorageUnavailable("the database server cannot be reached; retry shortly")
    return exc


def database_url(value: str | Path) -> sa.URL:
    """A SQLAlchemy URL: a path is an SQLite file; `postgresql://` URLs get the psycopg 3 driver.

    Raises ValueError for any other backend.
    """
    if isinstance(value, Path):
        return sa.URL.create("sqlite", database=str(value))
    url = sa.make_url(value)
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return url.set(drivername="sqlite")
    raise ValueError(
        f"unsupported database URL {url.render_as_string(hide_password=True)!r}: "
        "use postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"
    )


class Database:
    """An engine over SQLite or PostgreSQL, with short write transactions and named, idempotent migrations.

    SQLite: writes of this process are serialised under a lock and take the database's write lock up front
    (`BEGIN IMMEDIATE`); reads use other connections, so in WAL mode a read never waits behind a write (or behind
    another process holding the write lock). PostgreSQL: a connection pool, row locks, READ COMMITTED.

    A write that cannot get its lock within `busy_timeout_s` raises `StorageBusy`; one that finds the disk full
    raises `StorageFull`; an unreachable server raises `StorageUnavailable` (all `StorageError`).
    """

    def __init__(self, target: str | Path, busy_timeout_s: float = 5.0) -> None:
        self.url = database_url(target)
        self.dialect = self.url.get_backend_name()
        self._busy_ms = max(1, int(busy_timeout_s * 1000))
        self._write_lock: threading.RLock | None = None
        if self.dialect == "sqlite":
            self.path: Path | None = Path(self.url.database or "")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._engine = self._sqlite_engine(busy_timeout_s, writer=True)
            self._reader = self._sqlite_engine(busy_timeout_s, writer=False)
            self._write_lock = threading.RLock()
            with self._engine.connect() as conn:
                mode = conn.connection.dbapi_connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(
                    f"SQLite database {self.path} could not be switched to WAL mode (got {mode})"
                )
        else:
            self.path = None
            self._engine = sa.create_engine(
                self.url,
                pool_pre_ping=True,
                pool_size=8,
                max_overflow=8,
                # Every statement gives up on a lock after the busy timeout (StorageBusy), as on SQLite.
                connect_args={"options": f"-c lock_timeout={self._busy_ms}"},
            )
            self._reader = self._engine
        with self.transaction() as conn:
            self._lock_schema(conn)
            _MIGRATIONS.create(conn, checkfirst=True)

    def _sqlite_engine(self, busy_timeout_s: float, *, writer: bool) -> Engine:
        engine = sa.create_engine(
            self.url,
            connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
            # The writer is one connection used under `_write_lock`; readers get one per thread.
            poolclass=sa.pool.StaticPool if writer else sa.pool.QueuePool,
        )

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Autocommit at the driver; transactions are begun below, explicitly.
            dbapi_connection.isolation_level = None
            # NORMAL is crash-safe in WAL mode (a process crash loses nothing committed).
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")
            dbapi_connection.execute("PRAGMA foreign_keys=ON")
            if not writer:
                dbapi_connection.execute("PRAGMA query_only=ON")

        @sa_event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine

    @property
    def engine(self) -> Engine:
        return self._engine

    def describe(self) -> str:
        """The backend for logs, without credentials: `sqlite PATH (wal)` or `postgresql://USER@HOST/DB`."""
        if self.dialect == "sqlite":
            return f"sqlite {self.path} ({self.journal_mode()})"
        return self.url.set(drivername="postgresql").render_as_string(hide_password=True)

    @contextmanager
    def transaction(self, wait: bool = True) -> Iterator[Connection]:
        """One write transaction; `wait=False` fails at once (StorageBusy) instead of waiting for a lock."""
        if self._write_lock is None:
            try:
                with self._engine.begin() as conn:
                    if not wait:
                        # 0 would mean "no limit" here; 1 ms is "do not wait".
                        conn.exec_driver_sql("SET LOCAL lock_timeout = 1")
                    yield conn
            except sa.exc.DBAPIError as exc:
                raise _translated(exc) from exc
            return
        with self._write_lock, self._engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            try:
                if not wait:
                    raw.execute("PRAGMA busy_timeout = 0")
                try:
                    with conn.begin():
                        yield conn
                finally:
                    if not wait:
                        raw.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            except sa.exc.DBAPIError as exc:
                raise _translated(exc) from exc

    def query(self, statement: sa.Executable) -> list[Row]:
        """Run a read; never waits for a writer on SQLite (WAL) nor on PostgreSQL (MVCC)."""
        try:
            with self._reader.connect() as conn:
                return list(conn.execute(statement))
        except sa.exc.DBAPIError as exc:
            raise _translated(exc) from exc

    def _lock_schema(self, conn: Connection) -> None:
        """Processes starting together on one PostgreSQL database: one migrates, the others then see it done
        (SQLite's `BEGIN IMMEDIATE` already serialises them)."""
        if self.dialect == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))

    def migrate(self, name: str, steps: Sequence[MigrationStep]) -> bool:
        """Apply `steps` once under `name`, atomically; returns whether they ran now."""
        with self.transaction() as conn:
            self._lock_schema(conn)
            done = conn.execute(sa.select(_MIGRATIONS.c.name).where(_MIGRATIONS.c.name == name)).first()
            if done:
                return False
            ops = Operations(MigrationContext.configure(conn))
            for step in steps:
                if isinstance(step, str):
                    conn.exec_driver_sql(step)
                else:
                    step(ops)
            conn.execute(sa.insert(_MIGRATIONS).values(name=name, applied_at=time.time()))
        logger.info("database %s: applied migration %s", self.describe(), name)
        return True

    def insert_ignoring_duplicates(self, table: sa.Table) -> sa.Insert:
        """`INSERT ... ON CONFLICT DO NOTHING` in this backend's dialect."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing()

    def applied_migrations(self) -> list[str]:
        return [
            row[0] for row in self.query(sa.select(_MIGRATIONS.c.name).order_by(_MIGRATIONS.c.applied_at))
        ]

    def table_names(self) -> set[str]:
        return set(sa.inspect(self._reader).get_table_names())

    def journal_mode(self) -> str:
        """SQLite's journal mode (`wal`); PostgreSQL has one write-ahead log and answers `wal` too."""
        if self.dialect != "sqlite":
            return "wal"
        with self._reader.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())

    def close(self) -> None:
        if self._write_lock is not None:
            with self._write_lock:
                self._reader.dispose()
                self._engine.dispose()
        else:
            self._engine.dispose()


_METADATA = sa.MetaData()

_MIGRATIONS = sa.Table(
    "schema_migrations",
    _METADATA,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("applied_at", sa.Double, nullable=False),
)


# ---------------------------------------------------------------------------------------------------------- jobs

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def _job_columns() -> list[sa.Column]:
    """Fresh columns of `jobs` (a Column belongs to one table: the Core table and the migration each get theirs)."""
    return [
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("progress", sa.Double, nullable=False, server_default="0"),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("upload_path", sa.Text),
        sa.Column("frame_scores", sa.Integer, nullable=False, server_default="0"),
        sa.Column("video_json", sa.Text),
        sa.Column("result_json", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("error_code", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        # jobs_v2: event snapshots on request (`POST /analyze?snapshots=true`), stored with the result.
        sa.Column("snapshots", sa.Integer, nullable=False, server_default="0"),
        sa.Column("snapshots_json", sa.Text),
    ]


def _event_columns() -> list[sa.Column]:
    return [
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True
        ),
        sa.Column("source_kind", sa.Text, nullable=False),
        sa.Column("source_id", sa.Text, nullable=False),
        sa.Column("start_s", sa.Double, nullable=False),
        sa.Column("end_s", sa.Double),
        sa.Column("peak_score", sa.Double, nullable=False),
        sa.Column("mean_score", sa.Double),
        sa.Column("dominant_category", sa.Text),
        sa.Column("categories_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.Double, nullable=False),
        # Live events (events_live_v1): wall-clock start and end, open / closed / interrupted.
        sa.Column("started_at", sa.Double),
        sa.Column("ended_at", sa.Double),
        sa.Column("status", sa.Text, nullable=False, server_default="closed"),
        # events_live_v2: why a live event ended (NULL for events from before it was recorded).
        sa.Column("end_reason", sa.Text),
        # events_live_v3: the stream's name at the time of the event, readable after the stream is removed.
        sa.Column("source_name", sa.Text),
    ]


JOBS = sa.Table("jobs", _METADATA, *_job_columns())
EVENTS = sa.Table("events", _METADATA, *_event_columns(), sqlite_autoincrement=True)


_JOB_COLUMNS_V2 = ("snapshots", "snapshots_json")


def _jobs_v1(op: Operations) -> None:
    op.create_table(
        "jobs",
        *(column for column in _job_columns() if column.name not in _JOB_COLUMNS_V2),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in JOB_STATUSES)})", name="jobs_status"),
    )
    op.create_index("jobs_by_status", "jobs", ["status", "created_at"])
    op.create_index("jobs_by_created", "jobs", ["created_at"])


_LIVE_EVENT_COLUMNS = ("started_at", "ended_at", "status")
_LIVE_EVENT_COLUMNS_V2 = ("end_reason",)
_LIVE_EVENT_COLUMNS_V3 = ("source_name",)


def _events_v1(op: Operations) -> None:
    later = (*_LIVE_EVENT_COLUMNS, *_LIVE_EVENT_COLUMNS_V2, *_LIVE_EVENT_COLUMNS_V3)
    op.create_table(
        "events",
        *(column for column in _event_columns() if column.name not in later),
        sqlite_autoincrement=True,  # ids are never reused, as clients keep them
    )
    op.create_index("events_by_source", "events", ["source_kind", "source_id", "start_s"])
    op.create_index("events_by_created", "events", ["created_at"])


def _events_live_v1(op: Operations) -> None:
    for column in _event_columns():
        if column.name in _LIVE_EVENT_COLUMNS:
            op.add_column("events", column)
    op.create_index("events_by_started", "events", ["started_at"])


def _events_live_v2(op: Operations) -> None:
    for column in _event_columns():
        if column.name in _LIVE_EVENT_COLUMNS_V2:
            op.add_column("events", column)


def _events_live_v3(op: Operations) -> None:
    for column in _event_columns():
        if column.name in _LIVE_EVENT_COLUMNS_V3:
            op.add_column("events", column)


def _jobs_v2(op: Operations) -> None:
    for column in _job_columns():
        if column.name in _JOB_COLUMNS_V2:
            op.add_column("jobs", column)


JOBS_MIGRATIONS: tuple[tuple[str, Sequence[MigrationStep]], ...] = (
    ("jobs_v1", (_jobs_v1,)),
    ("jobs_v2", (_jobs_v2,)),
)
EVENTS_MIGRATIONS: tuple[tuple[str, Sequence[MigrationStep]], ...] = (
    ("events_v1", (_events_v1,)),
    ("events_live_v1", (_events_live_v1,)),
    ("events_live_v2", (_events_live_v2,)),
    ("events_live_v3", (_events_live_v3,)),
)


def apply_migrations(db: Database, migrations: Sequence[tuple[str, Sequence[MigrationStep]]]) -> None:
    for name, steps in migrations:
        db.migrate(name, steps)


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


def _job(row: Row | None) -> JobRecord | None:
    if row is None:
        return None
    data = dict(row._mapping)
    data["frame_scores"] = bool(data["frame_scores"])
    data["snapshots"] = bool(data.get("snapshots", 0))
    return JobRecord(**data)


class EventStore:
    """Anomaly events, from analysed files (`source_kind="job"`) and live streams (`source_kind="stream"`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        apply_migrations(db, EVENTS_MIGRATIONS)

    @staticmethod
    def insert_many(conn: Connection, events: Sequence[EventRecord]) -> None:
        """Insert inside a caller's transaction, so events and what produced them commit together."""
        now = time.time()
        conn.execute(
            sa.insert(EVENTS),
            [
                {
                    "source_kind": e.source_kind,
                    "source_id": e.source_id,
                    "start_s": e.start_s,
                    "end_s": e.end_s,
                    "peak_score": e.peak_score,
                    "mean_score": e.mean_score,
                    "dominant_category": e.dominant_category,
                    "categories_json": json.dumps(e.categories),
                    "created_at": e.created_at or now,
                }
                for e in events
            ],
        )

    def for_source(self, source_kind: str, source_id: str) -> list[EventRecord]:
        rows = self.db.query(
            sa.select(EVENTS)
            .where(EVENTS.c.source_kind == source_kind, EVENTS.c.source_id == source_id)
            .order_by(EVENTS.c.start_s, EVENTS.c.id)
        )
        records = []
        for row in rows:
            data = {k: v for k, v in row._mapping.items() if k in EventRecord.model_fields}
            data["categories"] = json.loads(row.categories_json)
            records.append(EventRecord(**data))
        return records


_CLAIMABLE = ("queued", "running")


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Job results own their events (deleted with the job), so both tables must exist.
        apply_migrations(db, EVENTS_MIGRATIONS)
        apply_migrations(db, JOBS_MIGRATIONS)

    def create(self, record: JobRecord) -> JobRecord:
        data = record.model_dump()
        data["frame_scores"] = int(data["frame_scores"])
        data["snapshots"] = int(data["snapshots"])
        with self.db.transaction() as conn:
            conn.execute(sa.insert(JOBS).values(**data))
        return record

    def get(self, job_id: str) -> JobRecord | None:
        rows = self.db.query(sa.select(JOBS).where(JOBS.c.id == job_id))
        return _job(rows[0] if rows else None)

    def list(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[JobRecord], int]:
        """Newest first, without results or snapshots (see `JobRecord.result_json`)."""
        where = [JOBS.c.status == status] if status else []
        large = ("result_json", "snapshots_json")
        columns = [sa.null().label(c.name) if c.name in large else c for c in JOBS.columns]
        rows = self.db.query(
            sa.select(*columns)
            .where(*where)
            .order_by(JOBS.c.created_at.desc(), JOBS.c.id)
            .limit(limit)
            .offset(offset)
        )
        total = self.db.query(sa.select(sa.func.count()).select_from(JOBS).where(*where))[0][0]
        return [_job(row) for row in rows], int(total)  # type: ignore[misc]

    def ids_with_status(self, status: str) -> list[str]:
        rows = self.db.query(
            sa.select(JOBS.c.id).where(JOBS.c.status == status).order_by(JOBS.c.created_at, JOBS.c.id)
        )
        return [row[0] for row in rows]

    def mark_running(self, job_id: str) -> JobRecord | None:
        """Claim a queued job for a worker; None if it is gone or no longer queued (deleted, cancelled)."""
        with self.db.transaction() as conn:
            return self._start(conn, job_id)

    def claim_next(self) -> JobRecord | None:
        """Claim the oldest queued job, or None. Several processes may call this at once on one PostgreSQL
        database: `FOR UPDATE SKIP LOCKED` hands each a different job without waiting for the others (on SQLite
        the write lock taken at `BEGIN IMMEDIATE` serialises them)."""
        with self.db.transaction() as conn:
            job_id = conn.execute(
                sa.select(JOBS.c.id)
                .where(JOBS.c.status == "queued")
                .order_by(JOBS.c.created_at, JOBS.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar()
            return None if job_id is None else self._start(conn, job_id)

    @staticmethod
    def _start(conn: Connection, job_id: str) -> JobRecord | None:
        cur = conn.execute(
            sa.update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.status == "queued")
            .values(status="running", started_at=time.time(), attempts=JOBS.c.attempts + 1, progress=0.0)
        )
        if cur.rowcount == 0:
            return None
        return _job(conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id)).first())

    def set_progress(self, job_id: str, progress: float) -> None:
        """Advisory: never waits for a locked database (StorageBusy at once)."""
        with self.db.transaction(wait=False) as conn:
            conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == "running")
                .values(progress=progress)
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
                sa.update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status.in_(_CLAIMABLE))
                .values(
                    status=status,
                    finished_at=time.time(),
                    result_json=result_json,
                    snapshots_json=snapshots_json,
                    error=error,
                    error_code=error_code,
                    upload_path=None,
                    progress=1.0 if status == "succeeded" else JOBS.c.progress,
                )
            )
            if cur.rowcount == 0:
                return False
            if events:
                EventStore.insert_many(conn, events)
        return True

    def requeue(self, job_id: str, note: str, *, refund_attempt: bool = False) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status.in_(_CLAIMABLE))
                .values(
                    status="queued",
                    progress=0.0,
                    started_at=None,
                    note=note,
                    attempts=JOBS.c.attempts - (1 if refund_attempt else 0),
                )
            )
            return cur.rowcount > 0

    def delete(self, job_id: str) -> JobRecord | None:
        with self.db.transaction() as conn:
            row = _job(conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id)).first())
            if row is None:
                return None
            conn.execute(sa.delete(EVENTS).where(EVENTS.c.source_kind == "job", EVENTS.c.source_id == job_id))
            conn.execute(sa.delete(JOBS).where(JOBS.c.id == job_id))
        return row

    def upload_paths_in_use(self) -> set[str]:
        rows = self.db.query(sa.select(JOBS.c.upload_path).where(JOBS.c.upload_path.is_not(None)))
        return {row[0] for row in rows}
