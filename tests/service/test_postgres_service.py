"""The service on a real PostgreSQL server (`REFINEVAD_DATABASE_URL`) instead of the embedded SQLite: the same
API, the same data, kept across a SIGKILL; the credentials in the URL never reach the logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.reliability.conftest import LIVE_ENV, wait_for
from tests.rtsp_server import free_port
from tests.service.conftest import REPO_ROOT, upload_video

pytestmark = pytest.mark.integration


def test_service_keeps_its_state_in_postgresql(
    make_server, footage: dict[str, Path], postgres_url: str, tmp_path: Path
) -> None:
    # A password the server must never print (trust authentication ignores it).
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")
    env = {**LIVE_ENV, "REFINEVAD_DATABASE_URL": url, "REFINEVAD_EVENT_THRESHOLD": "0"}
    server = make_server(env=env).start()
    dead_camera = f"rtsp://127.0.0.1:{free_port()}/cam"
    with server.client() as client:
        job = upload_video(client, footage["short"]).json()
        assert job["status"] == "succeeded" and job["result"]["events"], job
        stream = client.post("/streams", json={"url": dead_camera, "name": "gate"}).json()
    assert not (server.data_dir / "refinevad.sqlite3").exists()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT status FROM jobs WHERE id = %s", (job["id"],)).fetchone() == (
            "succeeded",
        )
        assert conn.execute("SELECT name FROM streams").fetchall() == [("gate",)]
        assert (
            conn.execute("SELECT count(*) FROM events WHERE source_id = %s", (job["id"],)).fetchone()[0] >= 1
        )
    server.kill()

    again = make_server(tmp_path / "other-host", env=env).start()
    with again.client() as client:
        assert client.get(f"/jobs/{job['id']}").json() == job
        wait_for(
            lambda: client.get(f"/streams/{stream['id']}").status_code == 200, 10, "the stream to resume"
        )
        events = client.get("/events", params={"source_id": job["id"]}).json()
        assert events["total"] == len(job["result"]["events"])
    log = server.log_tail(200_000) + again.log_tail(200_000)
    assert "s3cret-pw" not in log
    assert "database postgresql://postgres:***@127.0.0.1" in log


def test_unreachable_database_stops_the_service_with_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINEVAD_")}
    env.update(
        REFINEVAD_DATA_DIR=str(tmp_path / "data"),
        REFINEVAD_DATABASE_URL=f"postgresql://svc:hunter2@127.0.0.1:{free_port()}/refinevad",
    )
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "cannot open the database: the database server cannot be reached" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
