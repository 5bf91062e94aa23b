"""Event media end to end: the real service replaying Ped2 footage records a snapshot and an H.264 clip of an event,
serves them over HTTP with the usual auth (range requests for the clip), the latest frame of a stream, and removes
an event's media with it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import av
import cv2
import numpy as np
import pytest

from tests.footage import PED2_ROOT
from tests.reliability.conftest import wait_for
from tests.service.live.service_process import API_KEY, ServiceProcess

pytestmark = pytest.mark.integration

CLIP = str(PED2_ROOT / "testing" / "frames" / "02")
# Thresholds of 0 make every score an anomaly: one event opens at the first final score and stays open.
ALWAYS = {"enter_threshold": 0.0, "exit_threshold": 0.0, "min_duration_s": 0.0}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("media")
    proc = ServiceProcess(
        root / "data", root / "service.log", media_pre_roll_s=1.0, media_post_roll_s=1.0
    ).start()
    yield proc
    proc.stop()


def test_event_gets_a_snapshot_and_a_seekable_clip(service: ServiceProcess) -> None:
    with service.client() as client:
        sid = client.post("/streams", json={"url": CLIP, "name": "gate", "events": ALWAYS}).json()["id"]
        # The stream's latest frame, once the reader has read some.
        latest = wait_for(
            lambda: (r := client.get(f"/streams/{sid}/snapshot.jpg")).status_code == 200 and r, 30, "a frame"
        )
        assert latest.headers["content-type"] == "image/jpeg"
        frame = cv2.imdecode(np.frombuffer(latest.content, np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape == (240, 360, 3)  # Ped2 frames, below the 640-pixel clip width: kept as they are
        event = wait_for(
            lambda: (items := client.get("/events", params={"stream": sid}).json()["items"]) and items[0],
            30,
            "an event",
        )
        eid = event["id"]
        assert event["stream_name"] == "gate" and event["dominant_category"]  # set while still open
        assert event["status"] == "open" and event["clip_status"] == "recording"
        snap = wait_for(
            lambda: (r := client.get(f"/events/{eid}/snapshot.jpg")).status_code == 200 and r, 10, "snap"
        )
        assert cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR).shape == (240, 360, 3)
        # The clip is 404 while the event is open, with a reason.
        pending = client.get(f"/events/{eid}/clip.mp4")
        assert pending.status_code == 404 and "recording" in pending.json()["message"]
        time.sleep(4.0)  # a few seconds of event
        assert client.delete(f"/streams/{sid}").status_code == 204  # closes the event, finishes the clip
        clip = wait_for(
            lambda: (r := client.get(f"/events/{eid}/clip.mp4")).status_code == 200 and r, 20, "clip"
        )
        # The stream's removal also closes the event (its final peak stored).
        view = wait_for(
            lambda: (v := client.get(f"/events/{eid}").json())["status"] == "closed" and v,
            10,
            "the event closed",
        )
        assert view["clip_status"] == "ready" and view["clip_url"] == f"/events/{eid}/clip.mp4"
        assert view["snapshot_url"] == f"/events/{eid}/snapshot.jpg"
        assert clip.headers["content-type"] == "video/mp4" and clip.headers["accept-ranges"] == "bytes"
        size = len(clip.content)
        part = client.get(f"/events/{eid}/clip.mp4", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == clip.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{size}"
        assert (
            client.get(f"/events/{eid}/clip.mp4", headers={"Range": f"bytes={size + 10}-"}).status_code == 416
        )
        # Auth as everywhere: no key 401, a wrong one 403; browsers' <img>/<video> may pass ?api_key=.
        bare = service.base
        import httpx

        assert httpx.get(f"{bare}/events/{eid}/clip.mp4").status_code == 401
        assert (
            httpx.get(f"{bare}/events/{eid}/snapshot.jpg", headers={"X-API-Key": "nope"}).status_code == 403
        )
        assert httpx.get(f"{bare}/events/{eid}/snapshot.jpg", params={"api_key": API_KEY}).status_code == 200
        assert httpx.get(f"{bare}/streams/{sid}/snapshot.jpg", params={"api_key": API_KEY}).status_code == 404
        assert client.get("/events/999999/snapshot.jpg").status_code == 404
        assert client.get("/events/not-a-number/clip.mp4").status_code == 422

    path = service.data_dir / "media" / f"{eid}.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"  # plays in every browser
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    # At least the event's 4 s plus the pre-roll, at Ped2's 10 fps, in the stream's own frame size.
    assert len(frames) >= 40 and frames[0].shape == (240, 360, 3)
    # Not blank: real footage.
    assert float(np.std(frames[len(frames) // 2])) > 10

    with service.client() as client:
        # Deleting the event removes its files; the API says so.
        assert client.delete(f"/events/{eid}").status_code == 204
        assert client.get(f"/events/{eid}/clip.mp4").status_code == 404
        assert client.get(f"/events/{eid}").status_code == 404
        assert client.delete(f"/events/{eid}").status_code == 404
    assert not path.exists() and not (service.data_dir / "media" / f"{eid}.jpg").exists()
    assert "api_key=" + API_KEY not in service.log()
