"""Jobs across restarts and crashes: the real server is stopped, SIGKILLed and started again on the same data."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import assert_error, encode_looped_clip, upload_video, wait_final

pytestmark = pytest.mark.integration

BIG_UPLOADS = {"REFINEVAD_MAX_UPLOAD_MB": "64", "REFINEVAD_SYNC_MAX_SECONDS": "10"}


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ped2 clip 01 eight times: 1440 real frames, seconds of analysis on this CPU (time to crash it)."""
    return encode_looped_clip(tmp_path_factory.mktemp("long") / "long.mp4", repeats=8)


def _db_row(data_dir: Path, job_id: str) -> dict:
    with sqlite3.connect(data_dir / "refinevad.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def _wait_running(client: httpx.Client, job_id: str, attempts: int, timeout: float = 60.0) -> None:
    """Until a worker runs the job (its `attempts`-th try) and has made progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        if job["status"] == "running" and job["attempts"] == attempts and job["progress"] > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran (attempt {attempts})")


def test_jobs_results_and_a_running_job_survive_a_graceful_restart(
    make_server, footage: dict[str, Path], long_video: Path
) -> None:
    first = make_server(env=BIG_UPLOADS).start()
    with first.client() as client:
        sync_job = upload_video(client, footage["short"]).json()
        background = wait_final(client, upload_video(client, footage["clip"]).json()["id"])
        assert sync_job["status"] == background["status"] == "succeeded"
        running = upload_video(client, long_video).json()["id"]
        _wait_running(client, running, attempts=1)
    assert first.stop()  # SIGTERM while the long job runs

    with sqlite3.connect(first.data_dir / "refinevad.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = _db_row(first.data_dir, running)
    # A shutdown is not the job's fault: it is queued again and the attempt is not counted.
    assert (row["status"], row["attempts"]) == ("queued", 0)

    second = make_server(first.data_dir, env=BIG_UPLOADS).start()
    with second.client() as client:
        assert client.get(f"/jobs/{sync_job['id']}").json() == sync_job
        assert client.get(f"/jobs/{background['id']}").json() == background
        done = wait_final(client, running)
        assert done["status"] == "succeeded" and done["attempts"] == 1
        assert "shutdown" in done["note"]
        assert client.get("/jobs").json()["total"] == 3
    # Finished jobs leave no upload behind.
    assert list((second.data_dir / "uploads").iterdir()) == []


def test_crashed_jobs_are_resumed_then_failed_with_a_reason(make_server, long_video: Path) -> None:
    server = make_server(env=BIG_UPLOADS).start()
    data = server.data_dir
    with server.client() as client:
        first = upload_video(client, long_video).json()["id"]
        second = upload_video(client, long_video).json()["id"]
        _wait_running(client, first, attempts=1)
    server.kill()  # crash mid-analysis
    assert _db_row(data, first)["status"] == "running"
    assert _db_row(data, second)["status"] == "queued"

    # After the crash the interrupted job is resumed and completes; the queued one follows.
    server = make_server(data, env=BIG_UPLOADS).start()
    with server.client() as client:
        resumed = wait_final(client, first)
        assert resumed["status"] == "succeeded", resumed
        assert resumed["attempts"] == 2 and "resumed" in resumed["note"]
        assert resumed["result"]["frames"] == 1440
        _wait_running(client, second, attempts=1)
    server.kill()  # crash again, now in the second job

    # Restarted with a limit of one attempt: the interrupted job is failed, saying why; nothing is lost.
    server = make_server(data, env={**BIG_UPLOADS, "REFINEVAD_JOB_MAX_ATTEMPTS": "1"}).start()
    with server.client() as client:
        failed = client.get(f"/jobs/{second}").json()
        assert failed["status"] == "failed"
        assert "interrupted" in failed["error"] and "1 times" in failed["error"]
        assert client.get(f"/jobs/{first}").json() == resumed
    assert list((data / "uploads").iterdir()) == []


def test_deleting_a_running_job_stops_it(make_server, footage: dict[str, Path], long_video: Path) -> None:
    server = make_server(env=BIG_UPLOADS).start()
    with server.client() as client:
        job_id = upload_video(client, long_video).json()["id"]
        _wait_running(client, job_id, attempts=1)
        # While a job runs, the event loop still answers at once.
        started = time.perf_counter()
        assert client.get("/health").status_code == 200
        assert time.perf_counter() - started < 0.5
        assert client.delete(f"/jobs/{job_id}").status_code == 204
        assert_error(client.get(f"/jobs/{job_id}"), 404, "job_not_found")
        # The worker is free again: the next upload is answered synchronously.
        follow_up = upload_video(client, footage["short"])
        assert follow_up.status_code == 200 and follow_up.json()["status"] == "succeeded"
        assert client.get("/jobs").json()["total"] == 1
    assert list((server.data_dir / "uploads").iterdir()) == []
