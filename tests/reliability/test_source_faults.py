"""Faulty sources against the running service: a port that accepts and never speaks, one that sends random bytes,
a replayed source deleted while it plays, dead cameras beside a working one. Each fault must stay with its own
stream: a healthy stream beside them keeps its pace, and the API keeps answering. (A real camera killed and
restarted again and again: test_camera_recovery.py.)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.footage import PED2_ROOT, ped2_frame_files
from tests.reliability.conftest import (
    LIVE_ENV,
    Cadence,
    next_snippets,
    open_live,
    proc_stats,
    server_pid,
    stream_view,
    wait_for,
)
from tests.rtsp_server import RtspServerProcess
from tests.service.conftest import ServerProcess
from tests.service.live.conftest import requires_gstreamer

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

HEALTHY_CLIP = PED2_ROOT / "testing" / "frames" / "02"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("source-faults") / "data", env=LIVE_ENV).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def healthy(service: ServerProcess) -> str:
    """A replayed clip that loops forever: the stream that must not notice the others' faults. Returned once its
    first snippet is scored, so the service is warm (the appearance network's ONNX Runtime session for this frame
    size, with its pool thread, exists before a test counts threads)."""
    with service.client() as client:
        response = client.post("/streams", json={"url": str(HEALTHY_CLIP), "name": "healthy", "loop": True})
    assert response.status_code == 201, response.text
    sid = response.json()["id"]
    wait_for(
        lambda: stream_view(service, sid)["snippets_processed"] >= 1, 30, "the healthy stream's first score"
    )
    return sid


def _health_latency(service: ServerProcess) -> float:
    with httpx.Client(base_url=service.url, timeout=10) as anon:
        started = time.perf_counter()
        assert anon.get("/health").status_code == 200
        return time.perf_counter() - started


def test_silent_garbage_and_vanishing_sources_stay_contained(
    service: ServerProcess, healthy: str, hostile_peers, tmp_path: Path, report
) -> None:
    silent, garbage = hostile_peers("silent"), hostile_peers("garbage")
    # A replayed folder that is deleted while it plays: its reader fails mid-stream and can never reopen it.
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    for frame in ped2_frame_files("testing/frames/02", max_frames=48):  # 4.8 s at 10 fps
        shutil.copy(frame, doomed / frame.name)
    sources = {
        "silent rtsp": f"rtsp://127.0.0.1:{silent.port}/cam",
        "silent http": f"http://127.0.0.1:{silent.port}/video.mjpg",
        "garbage rtsp": f"rtsp://127.0.0.1:{garbage.port}/cam",
        "garbage http": f"http://127.0.0.1:{garbage.port}/video.mjpg",
        "vanishing replay": str(doomed),
    }
    pid = server_pid(service)
    before = proc_stats(pid)
    cadence = Cadence(service, healthy)
    ids: dict[str, str] = {}
    try:
        with service.client() as client:
            for name, url in sources.items():
                response = client.post("/streams", json={"url": url, "name": name, "loop": True})
                assert response.status_code == 201, response.text
                ids[name] = response.json()["id"]
        wait_for(lambda: stream_view(service, ids["vanishing replay"])["state"] == "live", 15, "replay live")
        shutil.rmtree(doomed)
        started = time.monotonic()
        worst_health = 0.0
        # Every faulty stream must fail, say why, and keep retrying; meanwhile the API answers at once.
        while time.monotonic() - started < 15:
            worst_health = max(worst_health, _health_latency(service))
            views = {name: stream_view(service, sid) for name, sid in ids.items()}
            if all(v["connect_attempts"] >= 3 and v["last_error"] for v in views.values()):
                break
            time.sleep(0.3)
        for name, view in views.items():
            assert view["state"] in ("connecting", "reconnecting"), (name, view)
            assert view["last_error"] and view["connect_attempts"] >= 3, (name, view)
            report(f"{name.replace(' ', '_')}_attempts_in_window", view["connect_attempts"])
        report("faults_window_s", time.monotonic() - started)
        report("health_worst_latency_s", worst_health)
        assert silent.accepted >= 2 and garbage.accepted >= 2
        assert worst_health < 0.5
        healthy_view = stream_view(service, healthy)
        assert healthy_view["state"] == "live"
        report("healthy_stream_max_gap_s", cadence.max_gap_s())
        assert cadence.max_gap_s() < 3.5
    finally:
        cadence.close()
        with service.client() as client:
            for sid in ids.values():
                assert client.delete(f"/streams/{sid}").status_code == 204
    # Removed readers end on their own, even those waiting on a peer that never answers.
    after = wait_for(
        lambda: (s := proc_stats(pid)).threads <= before.threads and s,
        15,
        f"reader threads to end (before: {before})",
    )
    report("process_before", str(before))
    report("process_after", str(after))
    assert after.fds <= before.fds + 2


@requires_gstreamer
def test_dead_cameras_do_not_delay_a_live_one(service: ServerProcess, hostile_peers, report) -> None:
    """OpenCV opens captures one at a time; cameras that never answer must not queue a working one behind them."""
    silent = hostile_peers("silent")
    ids = []
    with RtspServerProcess() as camera, service.client() as client:
        try:
            for k in range(6):
                response = client.post(
                    "/streams", json={"url": f"rtsp://127.0.0.1:{silent.port}/dead{k}", "name": f"dead {k}"}
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            wait_for(lambda: silent.accepted >= 6, 10, "the dead cameras to be tried")
            registered = time.monotonic()
            response = client.post("/streams", json={"url": camera.url, "name": "working camera"})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
            with open_live(service, ids[-1]) as ws:
                next_snippets(ws, 1, timeout=40, status="provisional")
            first_snippet = time.monotonic() - registered
        finally:
            for sid in ids:
                client.delete(f"/streams/{sid}")
    report("dead_cameras", 6)
    report("working_camera_first_snippet_s", first_snippet)
    # One snippet is 1.6 s of video; six dead cameras with a 2 s open timeout would add up to 12 s if serialised.
    assert first_snippet < 6.0
