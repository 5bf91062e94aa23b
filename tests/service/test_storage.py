"""The SQLite store: WAL mode, idempotent migrations, job state transitions, events committed with results."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from service.storage import Database, EventRecord, EventStore, JobRecord, JobStore


def _job(job_id: str, **kw) -> JobRecord:
    return JobRecord(
        id=job_id, status="queued", created_at=time.time(), filename="a.mp4", size_bytes=10, **kw
    )


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(tmp_path / "db" / "test.sqlite3")
    yield database
    database.close()


def test_wal_mode_and_migrations_run_once(db: Database) -> None:
    assert db.journal_mode() == "wal"
    JobStore(db)
    assert db.migrate("jobs_v1", ["CREATE TABLE must_not_run (x)"]) is False
    assert db.migrate("extra_v1", ["CREATE TABLE extra (x INTEGER)"]) is True
    assert db.migrate("extra_v1", ["CREATE TABLE extra (x INTEGER)"]) is False
    names = {row[0] for row in db.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "events", "extra", "schema_migrations"} <= names and "must_not_run" not in names


def test_a_failed_migration_leaves_nothing(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError):
        db.migrate("broken_v1", ["CREATE TABLE half (x)", "NOT SQL"])
    names = {row[0] for row in db.query("SELECT name FROM sqlite_master")}
    assert "half" not in names
    assert not db.query("SELECT 1 FROM schema_migrations WHERE name='broken_v1'")


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


def test_state_is_on_disk_for_another_connection(db: Database, tmp_path: Path) -> None:
    JobStore(db).create(_job("p"))
    other = Database(db.path)
    try:
        assert JobStore(other).get("p").filename == "a.mp4"
    finally:
        other.close()
