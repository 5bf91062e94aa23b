"""The service SIGKILLed with everything in flight (a job mid-analysis, a live stream with an open event, finished
jobs with their events) and started again on the same data: nothing stored is lost, the database is intact, the
open event is marked interrupted, the stream resumes, and the interrupted job is resumed to completion."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from tests.footage import PED2_ROOT
from tests.reliability.conftest import LIVE_ENV, next_snippets, open_live, wait_for
from tests.service.conftest import encode_looped_clip, upload_video, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ENV = {**LIVE_ENV, "REFINEVAD_MAX_UPLOAD_MB": "64", "REFINEVAD_SYNC_MAX_SECONDS": "10"}
ALWAYS_ANOMALOUS = {"enter_threshold": 0.0, "exit_threshold": 0.0, "min_duration_s": 0.0}


def _rows(data: Path) -> dict[str, dict]:
    with contextlib.closing(sqlite3.connect(data / "refinevad.sqlite3")) as conn:
        conn.row_factory = sqlite3.Row
        return {
            table: {row[0]: dict(row) for row in conn.execute(f"SELECT * FROM {table}")}
            for table in ("jobs", "events", "streams")
        }


def _integrity(data: Path) -> str:
    with contextlib.closing(sqlite3.connect(data / "refinevad.sqlite3")) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_sigkill_mid_job_loses_nothing(make_server, footage: dict[str, Path], tmp_path: Path, report) -> None:
    long_video = encode_looped_clip(tmp_path / "long.mp4", repeats=4)
    server = make_server(env=ENV).start()
    data = server.data_dir
    with server.client() as client:
        done = upload_video(client, footage["short"]).json()
        background = wait_final(client, upload_video(client, footage["clip"]).json()["id"])
        assert done["status"] == background["status"] == "succeeded"
        stream = client.post(
            "/streams",
            json={
                "url": str(PED2_ROOT / "testing" / "frames" / "01"),
                "name": "cam",
                "loop": True,
                "events": ALWAYS_ANOMALOUS,
            },
        ).json()
        wait_for(
            lambda: client.get("/events", params={"stream": stream["id"], "status": "open"}).json()["total"],
            30,
            "a live event to open",
        )
        running = upload_video(client, long_video).json()["id"]
        wait_for(
            lambda: (
                (j := client.get(f"/jobs/{running}").json())["status"] == "running" and j["progress"] > 0.1
            ),
            60,
            "the long job to be well under way",
        )
        before = _rows(data)
        server.kill()
    killed = time.monotonic()
    assert _integrity(data) == "ok"
    assert before["jobs"][running]["status"] == "running"

    server = make_server(data, env=ENV).start()
    report("restart_to_ready_s", time.monotonic() - killed)
    with server.client() as client:
        after = _rows(data)
        # Finished jobs, their results and events, and the stream registration are exactly as they were.
        for job_id in (done["id"], background["id"]):
            assert after["jobs"][job_id] == before["jobs"][job_id]
            assert (
                client.get(f"/jobs/{job_id}").json()["result"]
                == (done if job_id == done["id"] else background)["result"]
            )
        assert after["streams"] == before["streams"]
        assert set(before["events"]) <= set(after["events"])
        for event_id, event in before["events"].items():
            if event["status"] == "open":
                # Left open by the crash: kept with its start, closed as interrupted at start-up.
                assert after["events"][event_id]["status"] == "interrupted"
                assert after["events"][event_id]["ended_at"] is not None
                assert after["events"][event_id]["end_reason"] == "service_interrupted"
                changed = ("status", "ended_at", "end_reason")
                assert {k: v for k, v in after["events"][event_id].items() if k not in changed} == {
                    k: v for k, v in event.items() if k not in changed
                }
            else:
                assert after["events"][event_id] == event
        report("events_before_kill", len(before["events"]))
        # The stream resumes on its own.
        with open_live(server, stream["id"]) as ws:
            next_snippets(ws, 1, timeout=30, status="provisional")
        report("stream_resumed_after_s", time.monotonic() - killed)
        # The interrupted job is resumed and completes.
        resumed = wait_final(client, running, timeout=120)
        report("interrupted_job_done_after_s", time.monotonic() - killed)
        assert resumed["status"] == "succeeded", resumed
        assert resumed["attempts"] == 2 and "resumed" in resumed["note"]
        assert resumed["result"]["frames"] == 720
        assert client.delete(f"/streams/{stream['id']}").status_code == 204
    assert _integrity(data) == "ok"
