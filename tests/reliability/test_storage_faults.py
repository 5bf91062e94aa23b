"""Storage faults under the running service: the database locked by another process, the disk full, and the
PostgreSQL server down.

Either way every request that must write gets a clear JSON error at once (503 while locked, 507 while full), the
event loop keeps answering, nothing already stored changes or breaks (`PRAGMA integrity_check`), no half-written
upload is left behind, and everything works again once the lock is released or space is freed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.postgres_server import PostgresServer, postgres_available
from tests.reliability.conftest import LIVE_ENV, wait_for
from tests.rtsp_server import free_port
from tests.service.conftest import ServerProcess, assert_error, encode_looped_clip, upload_video, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ENV = {**LIVE_ENV, "REFINEVAD_MAX_UPLOAD_MB": "8", "REFINEVAD_SYNC_MAX_SECONDS": "10"}

# Holds a write lock on the database from another process until told to let go (a line on stdin).
_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


@contextlib.contextmanager
def locked_database(path: Path) -> Iterator[None]:
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        yield
    finally:
        if locker.poll() is None:
            assert locker.stdin is not None
            locker.stdin.write("\n")
            locker.stdin.flush()
            locker.wait(10)


def stored(data_dir: Path) -> tuple[str, list[tuple], list[tuple], list[tuple]]:
    with contextlib.closing(sqlite3.connect(data_dir / "refinevad.sqlite3")) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        jobs = conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        events = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        streams = conn.execute("SELECT * FROM streams ORDER BY id").fetchall()
    return check, jobs, events, streams


def spool(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "uploads").iterdir())


class HealthProbe:
    """Polls /health in the background; the worst latency says whether the event loop was ever blocked."""

    def __init__(self, server: ServerProcess) -> None:
        self.worst = 0.0
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=server.url, timeout=30)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            self._client.get("/health")
            self.worst = max(self.worst, time.perf_counter() - started)
            time.sleep(0.05)

    def close(self) -> float:
        self._stop.set()
        self._thread.join(35)
        self._client.close()
        return self.worst


def test_locked_database_gives_503_keeps_serving_and_recovers(
    make_server, footage: dict[str, Path], tmp_path: Path, report
) -> None:
    server = make_server(env=ENV).start()
    data = server.data_dir
    long_video = encode_looped_clip(tmp_path / "long.mp4", repeats=3)
    dead_camera = f"rtsp://127.0.0.1:{free_port()}/cam"
    with server.client() as client:
        done = upload_video(client, footage["short"]).json()
        assert done["status"] == "succeeded"
        running = upload_video(client, long_video).json()["id"]
        wait_for(
            lambda: (j := client.get(f"/jobs/{running}").json())["status"] == "running" and j["progress"] > 0,
            30,
            "the background job to run",
        )
        before = stored(data)
        probe = HealthProbe(server)
        with locked_database(data / "refinevad.sqlite3"):
            # Reads go on (WAL readers are not blocked by a writer).
            started = time.perf_counter()
            assert client.get(f"/jobs/{done['id']}").json() == done
            report("read_while_locked_s", time.perf_counter() - started)
            started = time.perf_counter()
            body = assert_error(client.post("/streams", json={"url": dead_camera, "name": "x"}), 503)
            report("write_refused_after_s", time.perf_counter() - started)
            assert body["error"] == "storage_busy" and "locked" in body["message"]
            assert_error(upload_video(client, footage["short"]), 503, "storage_busy")
            assert spool(data) == [] or all(name.startswith(running) for name in spool(data))
            # The background job finishes meanwhile; its result must not be lost to the lock.
            wait_for(lambda: "storing its result" in server.log_tail(), 20, "the job to finish while locked")
            assert client.get(f"/jobs/{running}").json()["status"] == "running"
        report("health_worst_latency_while_locked_s", probe.close())
        assert probe.worst < 1.0
        finished = wait_final(client, running, timeout=60)
        assert finished["status"] == "succeeded", finished
        assert finished["result"]["frames"] == 540
        # After release: writes work again and the worker still takes jobs.
        created = client.post("/streams", json={"url": dead_camera, "name": "after the lock"})
        assert created.status_code == 201, created.text
        again = upload_video(client, footage["short"])
        assert again.status_code == 200 and again.json()["status"] == "succeeded"
    check, jobs, events, _ = stored(data)
    assert check == "ok"
    assert [j for j in jobs if j[0] == done["id"]] == [j for j in before[1] if j[0] == done["id"]]
    assert set(before[2]) <= set(events)
    assert spool(data) == []


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, timeout=10
    )
    return result.returncode == 0


def _fill(disk: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    # Unbuffered: a buffered file would try to flush its last partial chunk again at close (ENOSPC there).
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
    return filler


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "16m"):
        pytest.skip("cannot mount a small tmpfs here (needs root, as in CI)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)


def test_full_disk_gives_507_changes_nothing_and_recovers(
    make_server, footage: dict[str, Path], small_disk: Path, report
) -> None:
    server = make_server(small_disk / "data", env=ENV).start()
    data = server.data_dir
    dead_camera = f"rtsp://127.0.0.1:{free_port()}/cam"
    with server.client() as client:
        done = upload_video(client, footage["short"]).json()
        assert done["status"] == "succeeded"
        assert client.post("/streams", json={"url": dead_camera, "name": "before"}).status_code == 201
        before = stored(data)
        filler = _fill(small_disk)
        report("filler_mb", filler.stat().st_size / 2**20)
        body = assert_error(upload_video(client, footage["short"]), 507, "storage_full")
        assert "space" in body["message"]
        assert spool(data) == []
        for _ in range(3):
            assert_error(client.post("/streams", json={"url": dead_camera, "name": "x" * 150}), 507)
        assert client.get(f"/jobs/{done['id']}").json() == done
        assert client.get("/health").status_code == 200
        filler.unlink()
        # Space is back: the same requests succeed.
        assert client.post("/streams", json={"url": dead_camera, "name": "after"}).status_code == 201
        again = upload_video(client, footage["short"])
        assert again.status_code == 200, again.text
        wait_for(lambda: client.get("/streams").json()["total"] == 2, 5, "two streams")
    check, jobs, events, streams = stored(data)
    assert check == "ok"
    assert set(before[1]) <= set(jobs) and set(before[2]) <= set(events) and set(before[3]) <= set(streams)
    assert len(jobs) == len(before[1]) + 1


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not installed")
def test_postgres_outage_gives_503_keeps_serving_and_recovers(
    make_server, footage: dict[str, Path], tmp_path: Path, report
) -> None:
    """The shared PostgreSQL server crashes under the running service: every request that needs the database
    gets a clear 503 at once while /health keeps answering, a job that finishes meanwhile keeps its result until
    it can be stored, and all works again once the server is back (no restart of the service)."""
    database = PostgresServer().start()
    try:
        env = {**ENV, "REFINEVAD_DATABASE_URL": database.url(), "REFINEVAD_DB_BUSY_TIMEOUT_S": "1"}
        server = make_server(env=env).start()
        long_video = encode_looped_clip(tmp_path / "long.mp4", repeats=3)
        dead_camera = f"rtsp://127.0.0.1:{free_port()}/cam"
        with server.client() as client:
            done = upload_video(client, footage["short"]).json()
            assert done["status"] == "succeeded"
            running = upload_video(client, long_video).json()["id"]
            wait_for(
                lambda: (
                    (j := client.get(f"/jobs/{running}").json())["status"] == "running" and j["progress"] > 0
                ),
                30,
                "the background job to run",
            )
            probe = HealthProbe(server)
            database.kill()
            started = time.perf_counter()
            assert_error(client.get(f"/jobs/{done['id']}"), 503, "storage_unavailable")
            report("read_refused_after_s", time.perf_counter() - started)
            body = assert_error(client.post("/streams", json={"url": dead_camera, "name": "x"}), 503)
            assert body["error"] == "storage_unavailable" and "cannot be reached" in body["message"]
            assert_error(upload_video(client, footage["short"]), 503, "storage_unavailable")
            assert all(name.startswith(running) for name in spool(server.data_dir))
            wait_for(lambda: "storing its result" in server.log_tail(), 30, "the job to finish while down")
            database.start()
            report("health_worst_latency_while_down_s", probe.close())
            assert probe.worst < 1.0
            finished = wait_final(client, running, timeout=60)
            assert finished["status"] == "succeeded", finished
            assert finished["result"]["frames"] == 540
            assert client.get(f"/jobs/{done['id']}").json() == done
            created = client.post("/streams", json={"url": dead_camera, "name": "after the outage"})
            assert created.status_code == 201, created.text
        assert spool(server.data_dir) == []
    finally:
        database.stop()
