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
from typing import Any, BinaryIO

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
        # jobs_v3: the lease of a running job: the process driving it, and until when (database clock, epoch
        # seconds) its claim holds unless renewed. An expired lease lets another replica take the job over.
        sa.Column("owner", sa.Text),
        sa.Column("lease_expires_at", sa.Double),
        # jobs_v4: the camera whose scene model scores the video (`POST /analyze?camera=`).
        sa.Column("camera", sa.Text),
    ]


def _upload_columns() -> list[sa.Column]:
    """Fresh columns of `job_uploads`: a cluster's uploads in parts of `UPLOAD_PART_BYTES`, so that whichever
    replica takes a job over can read its video (no replica's local disk is shared)."""
    return [
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
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
        # events_live_v4: an open event's state up to its last high snippet, so another worker can continue it.
        sa.Column("handover_json", sa.Text),
    ]


JOBS = sa.Table("jobs", _METADATA, *_job_columns())
EVENTS = sa.Table("events", _METADATA, *_event_columns(), sqlite_autoincrement=True)
JOB_UPLOADS = sa.Table("job_uploads", _METADATA, *_upload_columns())

# 1 MiB: a part is one short statement and bounds what a write or a read holds in memory.
UPLOAD_PART_BYTES = 1 << 20
# How long a claim holds unless renewed, when the caller does not say.
DEFAULT_LEASE_S = 30.0

_JOB_COLUMNS_V2 = ("snapshots", "snapshots_json")
_JOB_COLUMNS_V3 = ("owner", "lease_expires_at")
_JOB_COLUMNS_V4 = ("camera",)


def _jobs_v1(op: Operations) -> None:
    op.create_table(
        "jobs",
        *(
            column
            for column in _job_columns()
            if column.name not in (*_JOB_COLUMNS_V2, *_JOB_COLUMNS_V3, *_JOB_COLUMNS_V4)
        ),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in JOB_STATUSES)})", name="jobs_status"),
    )
    op.create_index("jobs_by_status", "jobs", ["status", "created_at"])
    op.create_index("jobs_by_created", "jobs", ["created_at"])


_LIVE_EVENT_COLUMNS = ("started_at", "ended_at", "status")
_LIVE_EVENT_COLUMNS_V2 = ("end_reason",)
_LIVE_EVENT_COLUMNS_V3 = ("source_name",)
_LIVE_EVENT_COLUMNS_V4 = ("handover_json",)


def _events_v1(op: Operations) -> None:
    later = (*_LIVE_EVENT_COLUMNS, *_LIVE_EVENT_COLUMNS_V2, *_LIVE_EVENT_COLUMNS_V3, *_LIVE_EVENT_COLUMNS_V4)
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


def _add_event_columns(names: tuple[str, ...]) -> MigrationStep:
    def step(op: Operations) -> None:
        for column in _event_columns():
            if column.name in names:
                op.add_column("events", column)

    return step


def _jobs_v2(op: Operations) -> None:
    for column in _job_columns():
        if column.name in _JOB_COLUMNS_V2:
            op.add_column("jobs", column)


def _jobs_v3(op: Operations) -> None:
    for column in _job_columns():
        if column.name in _JOB_COLUMNS_V3:
            op.add_column("jobs", column)
    op.create_table("job_uploads", *_upload_columns())
    if op.get_bind().dialect.name == "postgresql":
        # Video is compressed already: parts are stored as they are (out of line), not tried with pglz first.
        op.execute("ALTER TABLE job_uploads ALTER COLUMN data SET STORAGE EXTERNAL")


def _jobs_v4(op: Operations) -> None:
    for column in _job_columns():
        if column.name in _JOB_COLUMNS_V4:
            op.add_column("jobs", column)


JOBS_MIGRATIONS: tuple[tuple[str, Sequence[MigrationStep]], ...] = (
    ("jobs_v1", (_jobs_v1,)),
    ("jobs_v2", (_jobs_v2,)),
    ("jobs_v3", (_jobs_v3,)),
    ("jobs_v4", (_jobs_v4,)),
)
EVENTS_MIGRATIONS: tuple[tuple[str, Sequence[MigrationStep]], ...] = (
    ("events_v1", (_events_v1,)),
    ("events_live_v1", (_events_live_v1,)),
    ("events_live_v2", (_add_event_columns(_LIVE_EVENT_COLUMNS_V2),)),
    ("events_live_v3", (_add_event_columns(_LIVE_EVENT_COLUMNS_V3),)),
    ("events_live_v4", (_add_event_columns(_LIVE_EVENT_COLUMNS_V4),)),
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
    owner: str | None = None
    camera: str | None = None
    lease_expires_at: float | None = None

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


def insert_parts(
    conn: sa.Connection, table: sa.Table, source: BinaryIO, part_bytes: int, **key: object
) -> int:
    """Insert `source`'s bytes into `table` as rows `key` + (`part` 0, 1, ..., `data` of at most `part_bytes`),
    one part in memory at a time, on `conn` (the caller's transaction). Returns the number of parts."""
    part = 0
    while chunk := source.read(part_bytes):
        conn.execute(sa.insert(table).values(**key, part=part, data=chunk))
        part += 1
    return part


def database_now(dialect: str) -> sa.ColumnElement[float]:
    """Now, in seconds since the epoch, by the database server's clock: leases taken and renewed by replicas on
    several machines are compared on one clock, whatever each machine's own says."""
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Double)
    return (sa.func.julianday("now") - 2440587.5) * 86400.0


def _owned_by(owner: str | None) -> sa.ColumnElement[bool]:
    """A write that only the job's current owner may make (any, with no owner named). A queued job has none:
    a lease that was lost to a takeover fences its former owner out, so a result is never stored twice."""
    if owner is None:
        return sa.true()
    return sa.or_(JOBS.c.status == "queued", JOBS.c.owner == owner)


class JobStore:
    """Jobs and their state transitions. `shared_uploads` (cluster mode): `create` also stores the job's upload
    in the database (`job_uploads`), where any replica that takes the job over reads it (`fetch_upload`)."""

    def __init__(self, db: Database, *, shared_uploads: bool = False) -> None:
        self.db = db
        self.shared_uploads = shared_uploads
        # Job results own their events (deleted with the job), so both tables must exist.
        apply_migrations(db, EVENTS_MIGRATIONS)
        apply_migrations(db, JOBS_MIGRATIONS)
        self._now = database_now(db.dialect)

    def create(self, record: JobRecord) -> JobRecord:
        """Insert a new job; with `shared_uploads`, its upload file (`upload_path`) too, in the same transaction,
        so no replica ever sees the job without its video. OSError if the file cannot be read."""
        data = record.model_dump()
        data["frame_scores"] = int(data["frame_scores"])
        data["snapshots"] = int(data["snapshots"])
        with self.db.transaction() as conn:
            conn.execute(sa.insert(JOBS).values(**data))
            if self.shared_uploads and record.upload_path:
                with Path(record.upload_path).open("rb") as upload:
                    insert_parts(conn, JOB_UPLOADS, upload, UPLOAD_PART_BYTES, job_id=record.id)
        return record

    def fetch_upload(self, job_id: str, dest: Path) -> bool:
        """Write the job's stored upload to `dest`, one part at a time (never the whole video in memory); False
        if there is none (single node, or the job finished or was deleted meanwhile), leaving no file."""
        parts = [row[0] for row in self.db.query(self._parts(job_id))]
        if parts != list(range(len(parts))) or not parts:
            return False
        partial = dest.with_name(dest.name + ".fetching")
        try:
            with partial.open("wb") as out:
                for part in parts:
                    rows = self.db.query(
                        sa.select(JOB_UPLOADS.c.data).where(
                            JOB_UPLOADS.c.job_id == job_id, JOB_UPLOADS.c.part == part
                        )
                    )
                    if not rows:
                        return False
                    out.write(rows[0][0])
            partial.replace(dest)
            return True
        finally:
            partial.unlink(missing_ok=True)

    @staticmethod
    def _parts(job_id: str) -> sa.Select:
        return (
            sa.select(JOB_UPLOADS.c.part).where(JOB_UPLOADS.c.job_id == job_id).order_by(JOB_UPLOADS.c.part)
        )

    def has_upload(self, job_id: str) -> bool:
        return bool(self.db.query(self._parts(job_id).limit(1)))

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

    def mark_running(
        self, job_id: str, owner: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> JobRecord | None:
        """Claim a queued job for a worker, leased to `owner` for `lease_s` seconds; None if it is gone or no
        longer queued (deleted, cancelled, claimed by another replica)."""
        with self.db.transaction() as conn:
            return self._start(conn, job_id, "queued", owner, lease_s)

    def claim_next(
        self,
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        max_attempts: int | None = None,
    ) -> JobRecord | None:
        """Claim the oldest job that is queued, or running under a lease that expired (its owner died or stopped
        renewing it: taken over, one more attempt, with a note saying so), leased to `owner` for `lease_s`
        seconds; None if there is none. Several processes may call this at once on one PostgreSQL database:
        `FOR UPDATE SKIP LOCKED` hands each a different job without waiting for the others (on SQLite the write
        lock taken at `BEGIN IMMEDIATE` serialises them). An expired job that already had `max_attempts`
        attempts is failed with the reason (`interrupted`) instead, and the next one is looked at."""
        while True:
            with self.db.transaction() as conn:
                row = conn.execute(
                    sa.select(JOBS.c.id, JOBS.c.status, JOBS.c.owner, JOBS.c.attempts)
                    .where(self._claimable())
                    .order_by(JOBS.c.created_at, JOBS.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None:
                    return None
                if row.status == "queued":
                    return self._start(conn, row.id, "queued", owner, lease_s)
                if max_attempts is None or row.attempts < max_attempts:
                    note = (
                        f"taken over after its owner ({row.owner or 'unknown'}) stopped renewing its lease; "
                        f"{row.attempts} attempt(s) before"
                    )
                    logger.warning("job %s: %s", row.id, note)
                    return self._start(conn, row.id, "running", owner, lease_s, note=note)
                reason = (
                    f"its owner ({row.owner or 'unknown'}) stopped renewing its lease, and it had been tried "
                    f"{row.attempts} times (limit {max_attempts}); not retried again"
                )
                self._finish(conn, row.id, "failed", {"error": reason, "error_code": "interrupted"})
                logger.warning("job %s failed: %s", row.id, reason)

    def _claimable(self) -> sa.ColumnElement[bool]:
        expired = sa.or_(JOBS.c.lease_expires_at.is_(None), JOBS.c.lease_expires_at < self._now)
        return sa.and_(JOBS.c.status.in_(_CLAIMABLE), sa.or_(JOBS.c.status == "queued", expired))

    def _start(
        self,
        conn: Connection,
        job_id: str,
        status: str,
        owner: str | None,
        lease_s: float,
        note: str | None = None,
    ) -> JobRecord | None:
        values: dict[str, Any] = {
            "status": "running",
            "started_at": time.time(),
            "attempts": JOBS.c.attempts + 1,
            "progress": 0.0,
            "owner": owner,
            "lease_expires_at": self._now + lease_s,
        }
        if note is not None:
            values["note"] = note
        cur = conn.execute(
            sa.update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.status == status, self._claimable())
            .values(**values)
        )
        if cur.rowcount == 0:
            return None
        return _job(conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id)).first())

    def renew(self, job_ids: Sequence[str], owner: str, lease_s: float) -> set[str]:
        """Extend the leases `owner` holds on these running jobs by `lease_s` seconds from now; returns those it
        still holds (a job missing was deleted, finished, or taken over after the lease expired)."""
        if not job_ids:
            return set()
        with self.db.transaction() as conn:
            rows = conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.id.in_(list(job_ids)), JOBS.c.status == "running", JOBS.c.owner == owner)
                .values(lease_expires_at=self._now + lease_s)
                .returning(JOBS.c.id)
            )
            return {row[0] for row in rows}

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
        owner: str | None = None,
    ) -> bool:
        """Move a job to a terminal state with its result and events in one transaction, and drop its stored
        upload. With `owner`, only while that process holds the job (False otherwise: nothing is stored)."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status!r} is not a terminal job status")
        outcome = {
            "result_json": result_json,
            "snapshots_json": snapshots_json,
            "error": error,
            "error_code": error_code,
        }
        with self.db.transaction() as conn:
            return self._finish(conn, job_id, status, outcome, events=events, owner=owner)

    @staticmethod
    def _finish(
        conn: Connection,
        job_id: str,
        status: str,
        outcome: dict[str, str | None],
        *,
        events: Sequence[EventRecord] = (),
        owner: str | None = None,
    ) -> bool:
        cur = conn.execute(
            sa.update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.status.in_(_CLAIMABLE), _owned_by(owner))
            .values(
                status=status,
                finished_at=time.time(),
                **outcome,
                upload_path=None,
                lease_expires_at=None,
                progress=1.0 if status == "succeeded" else JOBS.c.progress,
            )
        )
        if cur.rowcount == 0:
            return False
        conn.execute(sa.delete(JOB_UPLOADS).where(JOB_UPLOADS.c.job_id == job_id))
        if events:
            EventStore.insert_many(conn, events)
        return True

    def requeue(
        self, job_id: str, note: str, *, refund_attempt: bool = False, owner: str | None = None
    ) -> bool:
        """Back to `queued` (lease released); with `owner`, only while that process holds the job."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status.in_(_CLAIMABLE), _owned_by(owner))
                .values(
                    status="queued",
                    progress=0.0,
                    started_at=None,
                    note=note,
                    owner=None,
                    lease_expires_at=None,
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
            conn.execute(sa.delete(JOB_UPLOADS).where(JOB_UPLOADS.c.job_id == job_id))
            conn.execute(sa.delete(JOBS).where(JOBS.c.id == job_id))
        return row

    def upload_paths_in_use(self) -> set[str]:
        rows = self.db.query(sa.select(JOBS.c.upload_path).where(JOBS.c.upload_path.is_not(None)))
        return {row[0] for row in rows}
