"""The durable store on both backends (embedded SQLite in WAL mode, a real PostgreSQL server): idempotent
migrations, one schema, job state transitions, events committed with results, claims that never hand one job to
two workers, and storage faults reported as `StorageError`s."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.cluster.messages import LIVE_MESSAGES, MessageLog
from service.event_media.store import EVENT_MEDIA, EVENT_MEDIA_PARTS, MEDIA_PART_BYTES, MediaStore
from service.live.store import STREAMS, StreamStore
from service.storage import (
    EVENTS,
    JOB_UPLOADS,
    JOBS,
    UPLOAD_PART_BYTES,
    Database,
    EventRecord,
    EventStore,
    JobRecord,
    JobStore,
    StorageBusy,
    StorageUnavailable,
)
from tests.postgres_server import PostgresServer, postgres_available


def _job(job_id: str, **kw) -> JobRecord:
    return JobRecord(
        id=job_id, status="queued", created_at=time.time(), filename="a.mp4", size_bytes=10, **kw
    )


@pytest.fixture
def db(database_target: str | Path) -> Iterator[Database]:
    database = Database(database_target)
    yield database
    database.close()


def test_wal_and_migrations_run_once(db: Database) -> None:
    assert db.journal_mode() == "wal"
    JobStore(db)
    assert db.migrate("jobs_v1", ["CREATE TABLE must_not_run (x INTEGER)"]) is False
    assert db.migrate("extra_v1", ["CREATE TABLE extra (x INTEGER)"]) is True
    assert db.migrate("extra_v1", ["CREATE TABLE extra (x INTEGER)"]) is False
    assert {"jobs", "events", "extra", "schema_migrations"} <= db.table_names()
    assert "must_not_run" not in db.table_names()
    assert db.applied_migrations() == [
        "events_v1",
        "events_live_v1",
        "events_live_v2",
        "events_live_v3",
        "events_live_v4",
        "jobs_v1",
        "jobs_v2",
        "jobs_v3",
        "jobs_v4",
        "extra_v1",
    ]


def test_a_failed_migration_leaves_nothing(db: Database) -> None:
    with pytest.raises(sa.exc.DBAPIError):
        db.migrate("broken_v1", ["CREATE TABLE half (x INTEGER)", "NOT SQL"])
    assert "half" not in db.table_names()
    assert "broken_v1" not in db.applied_migrations()


def test_migrated_schema_is_the_tables_the_stores_query(db: Database, tmp_path: Path) -> None:
    """The migrations and the Core tables describe one schema, on either backend."""
    JobStore(db), EventStore(db), StreamStore(db), MessageLog(db), MediaStore(db, tmp_path / "media")
    inspector = sa.inspect(db.engine)
    for table in (JOBS, EVENTS, JOB_UPLOADS, STREAMS, LIVE_MESSAGES, EVENT_MEDIA, EVENT_MEDIA_PARTS):
        reflected = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        declared = {c.name: c.nullable for c in table.columns}
        assert reflected == declared, table.name
    indexes = {ix["name"] for t in ("jobs", "events", "streams") for ix in inspector.get_indexes(t)}
    assert {"jobs_by_status", "events_by_source", "events_by_started", "streams_by_created"} <= indexes
    assert {"streams_by_worker"} <= indexes


def test_job_lifecycle_and_events(db: Database) -> None:
    jobs, events = JobStore(db), EventStore(db)
    jobs.create(_job("a", upload_path="/tmp/a.mp4"))
    running = jobs.mark_running("a")
    assert running is not None and running.status == "running" and running.attempts == 1
    assert jobs.mark_running("a") is None  # only a queued job can be claimed
    jobs.set_progress("a", 0.25)
    assert jobs.get("a").progress == 0.25
    event = EventRecord(
        source_kind="job",
        source_id="a",
        start_s=1.0,
        end_s=2.0,
        peak_score=0.9,
        mean_score=0.7,
        dominant_category="Fighting",
        categories={"Fighting": 0.8},
    )
    assert jobs.finish("a", "succeeded", result_json='{"x": 1}', events=[event])
    done = jobs.get("a")
    assert (done.status, done.progress, done.result_json, done.upload_path) == (
        "succeeded",
        1.0,
        '{"x": 1}',
        None,
    )
    assert done.terminal and done.finished_at is not None
    stored = events.for_source("job", "a")
    assert len(stored) == 1 and stored[0].categories == {"Fighting": 0.8} and stored[0].peak_score == 0.9
    # A finished job cannot be finished again or re-queued.
    assert not jobs.finish("a", "failed", error="late")
    assert not jobs.requeue("a", note="no")
    with pytest.raises(ValueError):
        jobs.finish("a", "running")
    # Deleting a job deletes its events.
    assert jobs.delete("a").id == "a"
    assert jobs.get("a") is None and events.for_source("job", "a") == []
    assert jobs.delete("a") is None


def test_timestamps_keep_full_precision(db: Database) -> None:
    """Wall-clock seconds need double precision (a 4-byte REAL would round them to minutes)."""
    jobs = JobStore(db)
    created = 1_790_000_000.123456
    jobs.create(_job("t").model_copy(update={"created_at": created}))
    assert jobs.get("t").created_at == created


def test_list_is_newest_first_without_results(db: Database) -> None:
    jobs = JobStore(db)
    for index in range(5):
        jobs.create(_job(f"j{index}").model_copy(update={"created_at": 1000.0 + index}))
    jobs.mark_running("j1")
    jobs.finish("j1", "succeeded", result_json="{}")
    page, total = jobs.list(limit=2, offset=1)
    assert total == 5 and [j.id for j in page] == ["j3", "j2"]
    done, total = jobs.list(status="succeeded")
    assert total == 1 and done[0].id == "j1" and done[0].result_json is None
    assert jobs.ids_with_status("queued") == ["j0", "j2", "j3", "j4"]


def test_requeue_can_refund_the_attempt(db: Database) -> None:
    jobs = JobStore(db)
    jobs.create(_job("r"))
    jobs.mark_running("r")
    assert jobs.requeue("r", note="shutdown", refund_attempt=True)
    job = jobs.get("r")
    assert (job.status, job.attempts, job.note, job.started_at) == ("queued", 0, "shutdown", None)


def test_a_duplicate_id_is_refused_and_changes_nothing(db: Database) -> None:
    jobs = JobStore(db)
    jobs.create(_job("d"))
    with pytest.raises(sa.exc.IntegrityError):
        jobs.create(_job("d").model_copy(update={"filename": "other.mp4"}))
    assert jobs.get("d").filename == "a.mp4"


def test_state_is_durable_for_another_connection(db: Database, database_target: str | Path) -> None:
    JobStore(db).create(_job("p"))
    other = Database(database_target)
    try:
        assert JobStore(other).get("p").filename == "a.mp4"
    finally:
        other.close()


def _drain_concurrently(
    database_target: str | Path, claim: Callable[[JobStore, str], JobRecord | None]
) -> list[list[str]]:
    """Four workers (owners `w0`..`w3`) on two more connections claim until nothing is left: what each took."""
    others = [Database(database_target) for _ in range(2)]
    claimed: list[list[str]] = [[] for _ in range(4)]

    def drain(store: JobStore, owner: str, into: list[str]) -> None:
        while (job := claim(store, owner)) is not None:
            into.append(job.id)

    threads = [
        threading.Thread(target=drain, args=(JobStore(others[i % 2]), f"w{i}", claimed[i])) for i in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for other in others:
            other.close()
    return claimed


def test_concurrent_claims_never_share_a_job(db: Database, database_target: str | Path) -> None:
    """Four workers in two processes' worth of connections drain the queue: every job exactly once."""
    jobs = JobStore(db)
    for index in range(40):
        jobs.create(_job(f"c{index:02d}").model_copy(update={"created_at": 1000.0 + index}))
    claimed = _drain_concurrently(database_target, lambda store, _owner: store.claim_next())
    everything = [job_id for part in claimed for job_id in part]
    assert sorted(everything) == [f"c{index:02d}" for index in range(40)]
    assert all(jobs.get(job_id).status == "running" for job_id in everything)
    assert jobs.claim_next() is None


def _job_event(job_id: str) -> EventRecord:
    return EventRecord(source_kind="job", source_id=job_id, start_s=1.0, end_s=2.0, peak_score=0.9)


def test_a_lease_fences_out_its_former_owner_after_a_takeover(db: Database) -> None:
    """Replica `a` claims a job and stops renewing (it died); `b` takes it over once the lease expired, and
    whatever `a` tries afterwards changes nothing: the result and its events are stored once, by `b`."""
    jobs, events = JobStore(db), EventStore(db)
    jobs.create(_job("l"))
    held = jobs.claim_next(owner="a", lease_s=30)
    assert (held.id, held.status, held.owner, held.attempts) == ("l", "running", "a", 1)
    # The lease is on the database's clock (the same machine's here).
    assert time.time() + 25 < held.lease_expires_at < time.time() + 35
    assert jobs.claim_next(owner="b") is None  # a live lease is not taken
    assert jobs.renew(["l", "unknown"], "a", lease_s=0.3) == {"l"}
    time.sleep(0.6)
    taken = jobs.claim_next(owner="b", lease_s=30, max_attempts=3)
    assert (taken.id, taken.owner, taken.attempts) == ("l", "b", 2)
    assert "taken over" in taken.note and "(a)" in taken.note
    # `a` learns at its next renewal that it lost the job, and can neither store a result nor re-queue it.
    assert jobs.renew(["l"], "a", lease_s=30) == set()
    assert not jobs.finish("l", "succeeded", result_json='{"by": "a"}', events=[_job_event("l")], owner="a")
    assert not jobs.requeue("l", note="shutdown", owner="a")
    assert jobs.finish("l", "succeeded", result_json='{"by": "b"}', events=[_job_event("l")], owner="b")
    done = jobs.get("l")
    assert (done.status, done.result_json, done.owner, done.lease_expires_at) == (
        "succeeded",
        '{"by": "b"}',
        "b",
        None,
    )
    assert len(events.for_source("job", "l")) == 1
    assert jobs.claim_next(owner="c") is None


def test_an_expired_job_out_of_attempts_is_failed_with_the_reason(db: Database) -> None:
    jobs = JobStore(db)
    jobs.create(_job("x").model_copy(update={"created_at": 1.0}))
    jobs.create(_job("y").model_copy(update={"created_at": 2.0}))
    assert jobs.claim_next(owner="a", lease_s=0.2).id == "x"
    time.sleep(0.5)
    assert jobs.claim_next(owner="b", max_attempts=1).id == "y"
    failed = jobs.get("x")
    assert (failed.status, failed.error_code, failed.lease_expires_at) == ("failed", "interrupted", None)
    assert "(a)" in failed.error and "limit 1" in failed.error


def test_concurrent_takeovers_never_share_a_job(db: Database, database_target: str | Path) -> None:
    """Twenty jobs whose owner died: four workers on two more connections take each over exactly once."""
    jobs = JobStore(db)
    for index in range(20):
        jobs.create(_job(f"e{index:02d}").model_copy(update={"created_at": 1000.0 + index}))
        jobs.mark_running(f"e{index:02d}", owner="dead", lease_s=0.2)
    time.sleep(0.5)
    claimed = _drain_concurrently(database_target, lambda store, owner: store.claim_next(owner, lease_s=60))
    assert sorted(j for part in claimed for j in part) == [f"e{index:02d}" for index in range(20)]
    for index, part in enumerate(claimed):
        for job_id in part:
            job = jobs.get(job_id)
            assert (job.owner, job.attempts) == (f"w{index}", 2)


def test_shared_uploads_are_stored_fetched_and_dropped_with_the_job(db: Database, tmp_path: Path) -> None:
    """Cluster mode: an upload is stored with its job, read back by another replica part by part, and removed
    when the job finishes or is deleted; a single node stores none."""
    data = os.urandom(2 * UPLOAD_PART_BYTES + 123)
    video = tmp_path / "spool" / "u.upload"
    video.parent.mkdir()
    video.write_bytes(data)
    jobs = JobStore(db, shared_uploads=True)
    jobs.create(_job("u", upload_path=str(video)))
    elsewhere = tmp_path / "replica-b"
    elsewhere.mkdir()
    assert jobs.fetch_upload("u", elsewhere / "u.upload")
    assert (elsewhere / "u.upload").read_bytes() == data
    assert [p.name for p in elsewhere.iterdir()] == ["u.upload"]
    jobs.mark_running("u", owner="b")
    assert jobs.finish("u", "failed", error="x", owner="b")
    assert not jobs.has_upload("u")
    assert not jobs.fetch_upload("u", elsewhere / "again.upload")
    assert [p.name for p in elsewhere.iterdir()] == ["u.upload"]
    jobs.create(_job("v", upload_path=str(video)))
    assert jobs.has_upload("v")
    jobs.delete("v")
    assert not jobs.has_upload("v")
    JobStore(db).create(_job("w", upload_path=str(video)))
    assert not jobs.has_upload("w")


def test_claim_skips_a_job_locked_by_another_transaction(postgres_url: str) -> None:
    """PostgreSQL: a claim does not wait for another worker's row lock, it takes the next job."""
    db = Database(postgres_url)
    jobs = JobStore(db)
    jobs.create(_job("first").model_copy(update={"created_at": 1.0}))
    jobs.create(_job("second").model_copy(update={"created_at": 2.0}))
    jobs.create(_job("busy").model_copy(update={"created_at": 0.5}))
    jobs.mark_running("busy")
    try:
        with db.engine.begin() as holder:
            holder.execute(sa.select(JOBS).where(JOBS.c.id.in_(["first", "busy"])).with_for_update())
            started = time.monotonic()
            assert jobs.claim_next().id == "second"
            assert time.monotonic() - started < 2.0
            # An advisory write does not wait for the lock either: StorageBusy at once.
            with pytest.raises(StorageBusy):
                jobs.set_progress("busy", 0.5)
        assert jobs.claim_next().id == "first"
    finally:
        db.close()


def test_sqlite_write_locked_elsewhere_is_busy(tmp_path: Path) -> None:
    db = Database(tmp_path / "busy.sqlite3", busy_timeout_s=0.2)
    jobs = JobStore(db)
    jobs.create(_job("b"))
    locker = sqlite3.connect(tmp_path / "busy.sqlite3", isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageBusy):
            jobs.create(_job("c"))
        assert jobs.get("b") is not None  # reads go on
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    jobs.create(_job("c"))
    db.close()


def test_sqlite_database_of_the_previous_release_opens_unchanged(tmp_path: Path) -> None:
    """A database written by the raw-SQL store of earlier releases: its migrations are recorded by name, so
    nothing runs again and its rows read back."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            PRAGMA journal_mode=WAL;
            CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL);
            CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, source_kind TEXT NOT NULL,
                source_id TEXT NOT NULL, start_s REAL NOT NULL, end_s REAL, peak_score REAL NOT NULL,
                mean_score REAL, dominant_category TEXT, categories_json TEXT NOT NULL DEFAULT '{}',
                created_at REAL NOT NULL, started_at REAL, ended_at REAL,
                status TEXT NOT NULL DEFAULT 'closed');
            CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at REAL NOT NULL,
                started_at REAL, finished_at REAL, progress REAL NOT NULL DEFAULT 0, filename TEXT NOT NULL,
                content_type TEXT, size_bytes INTEGER NOT NULL, upload_path TEXT,
                frame_scores INTEGER NOT NULL DEFAULT 0, video_json TEXT, result_json TEXT, error TEXT,
                error_code TEXT, note TEXT, attempts INTEGER NOT NULL DEFAULT 0);
            INSERT INTO schema_migrations VALUES ('events_v1', 1), ('events_live_v1', 2), ('jobs_v1', 3);
            INSERT INTO jobs (id, status, created_at, filename, size_bytes) VALUES ('old', 'queued', 5, 'o.mp4', 1);
            INSERT INTO events (source_kind, source_id, start_s, peak_score, created_at)
                VALUES ('job', 'old', 0.5, 0.9, 5);
            """
        )
    db = Database(path)
    try:
        jobs = JobStore(db)
        assert jobs.get("old").filename == "o.mp4"
        assert EventStore(db).for_source("job", "old")[0].peak_score == 0.9
        # What the old release lacked (events_live_v2: end_reason) is added now, nothing else runs again.
        assert db.applied_migrations() == [
            "events_v1",
            "events_live_v1",
            "jobs_v1",
            "events_live_v2",
            "events_live_v3",
            "events_live_v4",
            "jobs_v2",
            "jobs_v3",
            "jobs_v4",
        ]
        assert jobs.claim_next().id == "old"
    finally:
        db.close()


def test_unsupported_database_urls_are_refused_clearly() -> None:
    for url in ("mysql://u@h/db", "sqlite://", "not a url"):
        with pytest.raises((ValueError, sa.exc.ArgumentError)) as info:
            Database(url)
        assert "postgresql://" in str(info.value) or "Could not parse" in str(info.value)


@pytest.mark.integration
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not installed")
def test_postgres_down_is_unavailable_then_recovers() -> None:
    """The server crashes: reads and writes fail with StorageUnavailable (a 503), nothing committed is lost,
    and the same `Database` works again once the server is back."""
    server = PostgresServer().start()
    try:
        db = Database(server.url(), busy_timeout_s=1.0)
        jobs = JobStore(db)
        jobs.create(_job("kept"))
        server.kill()
        with pytest.raises(StorageUnavailable):
            jobs.get("kept")
        with pytest.raises(StorageUnavailable):
            jobs.create(_job("lost"))
        server.start()
        assert jobs.get("kept").filename == "a.mp4"
        assert jobs.get("lost") is None
        jobs.create(_job("after"))
        assert jobs.claim_next().id in ("kept", "after")
        db.close()
    finally:
        server.stop()


def test_shared_event_media_are_stored_in_parts_read_by_range_and_removed(
    db: Database, tmp_path: Path
) -> None:
    """Cluster mode: a snapshot and a finished clip are stored in 1 MiB parts (the clip's local file removed),
    replaced whole, read back by byte range across parts, and removed by retention or with their event; a single
    node stores files and no parts."""
    store = MediaStore(db, tmp_path / "scratch", shared=True)
    for event_id in (1, 2):
        store.create(event_id, "cam")
    first, second = os.urandom(MEDIA_PART_BYTES + 10), os.urandom(300)
    store.save_snapshot(1, first)
    assert store.read_snapshot(1) == first and store.get(1).snapshot_bytes == len(first)
    store.save_snapshot(1, second)  # a new peak: the old snapshot is replaced, not mixed in
    assert store.read_snapshot(1) == second and store.get(1).snapshot_bytes == 300
    clip = os.urandom(2 * MEDIA_PART_BYTES + 123)
    partial = store.partial_clip_path(1)
    partial.write_bytes(clip)
    assert store.save_clip(1, partial, "h264")
    assert not partial.exists() and not list(store.root.iterdir())
    record = store.get(1)
    assert (record.clip_status, record.clip_bytes) == ("ready", len(clip))
    for start, stop in (
        (0, len(clip)),
        (100, 200),
        (MEDIA_PART_BYTES - 5, MEDIA_PART_BYTES + 5),
        (len(clip) - 7, len(clip)),
    ):
        assert b"".join(store.read_clip(1, start, stop)) == clip[start:stop], (start, stop)
    parts = sa.select(sa.func.count()).select_from(EVENT_MEDIA_PARTS)
    assert db.query(parts)[0][0] == 1 + 3
    assert store.total_bytes() == 300 + len(clip)
    # An event deleted while its clip recorded: nothing is stored, the local file goes anyway.
    store.delete(2)
    partial = store.partial_clip_path(2)
    partial.write_bytes(b"late clip")
    assert not store.save_clip(2, partial, "h264") and not partial.exists()
    store.save_snapshot(2, b"late snapshot")
    assert store.get(2) is None and store.read_snapshot(2) is None
    assert db.query(parts)[0][0] == 4
    # Retention: the bytes go, the row says so.
    store.expire(1)
    assert store.get(1).clip_status == "expired" and store.read_snapshot(1) is None
    assert list(store.read_clip(1, 0, len(clip))) == [] and db.query(parts)[0][0] == 0
    # A single node writes files, as before, and stores no parts.
    local = MediaStore(db, tmp_path / "media")
    local.create(3, "cam")
    local.save_snapshot(3, second)
    assert local.snapshot_path(3).read_bytes() == second and db.query(parts)[0][0] == 0
