"""How live events end when their stream does, against the real service (`refinevad serve` in a subprocess): a
replayed file reaching its end, a removed stream, an MJPEG-over-HTTP camera that goes silent and one that goes
away, the service shutting down. Each closes its open event at the last scored snippet with the reason, in the event API and in a WebSocket
`event` message, and scoring after the camera's return starts a new event instead of bridging the outage.

Every stream here uses enter and exit thresholds of 0, so each scored snippet is "high": an event opens with the
first final score and only the stream's own ending can close it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from websockets.sync.client import ClientConnection, connect

from service.live.events import EventFilter, LiveEventStore
from service.storage import Database
from tests.footage import encode_ped2_clip
from tests.mjpeg_server import MjpegCamera
from tests.service.live.service_process import API_KEY, ServiceProcess

pytestmark = pytest.mark.integration

ALWAYS_HIGH = {"enter_threshold": 0.0, "exit_threshold": 0.0}
READ_TIMEOUT_S = 3.0
SNIPPET_S = 1.6  # 16 frames at 10 fps


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("event-endings")
    proc = ServiceProcess(
        root / "data",
        root / "service.log",
        allowed_schemes="rtsp,http,file",
        live_read_timeout_s=READ_TIMEOUT_S,
        live_stall_after_s=1.0,
        live_probe_interval_s=0.5,
        # These clips are a few snippets long and test how events end: events may open from the first snippet.
        scene_check_min_snippets=1,
    ).start()
    yield proc
    proc.stop()


def add_stream(service: ServiceProcess, url: str, name: str, **options: object) -> str:
    with service.client() as client:
        response = client.post("/streams", json={"url": url, "name": name, "events": ALWAYS_HIGH, **options})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def open_live(service: ServiceProcess, stream_id: str, since: int | None = None) -> ClientConnection:
    query = f"?since={since}" if since is not None else ""
    return connect(
        f"{service.ws_base}/streams/{stream_id}/live{query}", additional_headers={"X-API-Key": API_KEY}
    )


def next_message(ws: ClientConnection, timeout: float, accept) -> dict:
    """The next message `accept` returns true for; others are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching message within {timeout}s")
        message = json.loads(ws.recv(timeout=remaining))
        if accept(message):
            return message


def event_started(message: dict) -> bool:
    return message["type"] == "snippet" and any(e["type"] == "start" for e in message["events"])


def event_ended(message: dict) -> bool:
    return message["type"] == "event" and message["event"]["type"] == "end"


def stream_events(service: ServiceProcess, stream_id: str) -> list[dict]:
    with service.client() as client:
        response = client.get("/events", params={"stream": stream_id})
    assert response.status_code == 200, response.text
    return sorted(response.json()["items"], key=lambda e: e["id"])


def test_a_replayed_file_that_ends_closes_its_event(service: ServiceProcess, tmp_path) -> None:
    clip = encode_ped2_clip(tmp_path / "clip.avi", max_frames=96, codec="MJPG")  # 6 snippets of 1.6 s
    sid = add_stream(service, str(clip), "short replay")
    with open_live(service, sid, since=0) as ws:
        ended = next_message(ws, 30, event_ended)
    event = ended["event"]
    assert event["end_reason"] == "stream_ended"
    # Closed at the last snippet with a final score: the newest ones (index 4 or 5) only ever got a provisional.
    assert event["end_s"] in (pytest.approx(4 * SNIPPET_S), pytest.approx(5 * SNIPPET_S))
    assert ended["index"] in (4, 5)
    (stored,) = stream_events(service, sid)
    assert stored["id"] == event["event_id"]
    assert stored["status"] == "closed" and stored["end_reason"] == "stream_ended"
    assert stored["end_s"] == pytest.approx(event["end_s"]) and stored["ended_at"] is not None
    with service.client() as client:
        assert client.get(f"/streams/{sid}").json()["state"] == "stopped"
        assert client.delete(f"/streams/{sid}").status_code == 204


def test_a_removed_stream_closes_its_event(service: ServiceProcess, tmp_path) -> None:
    clip = encode_ped2_clip(tmp_path / "clip.avi", max_frames=64, codec="MJPG")
    sid = add_stream(service, str(clip), "looped replay", loop=True)
    with open_live(service, sid) as ws:
        started = next_message(ws, 30, event_started)
    with service.client() as client:
        assert client.delete(f"/streams/{sid}").status_code == 204
    deadline = time.monotonic() + 10
    while (events := stream_events(service, sid))[0]["status"] == "open" and time.monotonic() < deadline:
        time.sleep(0.2)
    (stored,) = events
    assert stored["id"] == started["events"][0]["event_id"]
    assert stored["status"] == "closed" and stored["end_reason"] == "stream_removed"


def test_a_camera_that_goes_silent_closes_its_event_and_a_new_one_follows(service: ServiceProcess) -> None:
    with MjpegCamera() as camera:
        sid = add_stream(service, camera.url, "silent camera")
        try:
            with open_live(service, sid) as ws:
                first = next_message(ws, 30, event_started)["events"][0]
                camera.silent()
                silenced = time.monotonic()
                stalled = next_message(ws, READ_TIMEOUT_S, lambda m: m["type"] == "state")
                assert stalled["state"] == "stalled" and "no frame" in stalled["last_error"]
                ended = next_message(ws, READ_TIMEOUT_S, event_ended)
                closed_after = time.monotonic() - silenced
                assert ended["event"]["event_id"] == first["event_id"]
                assert ended["event"]["end_reason"] == "source_stalled"
                assert closed_after < READ_TIMEOUT_S
                camera.resume()
                # Scores resume after the reconnection: a new event, the outage is not bridged.
                second = next_message(ws, 30, event_started)["events"][0]
            assert second["event_id"] != first["event_id"]
            events = stream_events(service, sid)
            assert [(e["status"], e["end_reason"]) for e in events] == [
                ("closed", "source_stalled"),
                ("open", None),
            ]
            assert events[0]["end_s"] <= events[1]["start_s"]
        finally:
            with service.client() as client:
                assert client.delete(f"/streams/{sid}").status_code == 204


def test_a_camera_that_goes_away_closes_its_event(service: ServiceProcess) -> None:
    camera = MjpegCamera().start()
    try:
        sid = add_stream(service, camera.url, "vanishing camera")
        with open_live(service, sid) as ws:
            first = next_message(ws, 30, event_started)["events"][0]
            camera.close()
            ended = next_message(ws, READ_TIMEOUT_S, event_ended)
        assert ended["event"]["event_id"] == first["event_id"]
        assert ended["event"]["end_reason"] == "source_lost"
        (stored,) = stream_events(service, sid)
        assert stored["status"] == "closed" and stored["end_reason"] == "source_lost"
        with service.client() as client:
            assert client.get(f"/streams/{sid}").json()["state"] == "reconnecting"
            assert client.delete(f"/streams/{sid}").status_code == 204
    finally:
        camera.close()


def test_a_service_shutdown_closes_open_events(tmp_path) -> None:
    """Stopped cleanly (SIGTERM), the service closes its streams' open events as `service_stopped`, not as ended
    streams (their readers stop first) and not as `interrupted` (that is for crashes)."""
    clip = encode_ped2_clip(tmp_path / "clip.avi", max_frames=64, codec="MJPG")
    proc = ServiceProcess(
        tmp_path / "data", tmp_path / "service.log", allowed_schemes="rtsp,http,file"
    ).start()
    try:
        sid = add_stream(proc, str(clip), "looped replay", loop=True)
        with open_live(proc, sid) as ws:
            started = next_message(ws, 30, event_started)["events"][0]
    finally:
        proc.stop()
    store = LiveEventStore(Database(tmp_path / "data" / "refinevad.sqlite3"))
    rows, total = store.query(EventFilter(source_id=sid))
    assert total == 1 and rows[0]["id"] == started["event_id"]
    assert rows[0]["status"] == "closed" and rows[0]["end_reason"] == "service_stopped"
