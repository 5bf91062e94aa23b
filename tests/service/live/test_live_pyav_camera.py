"""A lossy network camera end to end through the running service with the default live decoder (PyAV): the field
capture `hevc_packet_loss.ts` (H.265, ~2 % of transport packets lost) played over HTTP at its own pace by a server on
loopback, as a camera's stream port would. Its live snippet messages say which snippets hold damaged or lost frames,
the stream status counts the decoder's errors, and no event opens on a degraded snippet.

The camera is joined at frame 50, in the damaged stretch of the capture (frames 46-97; the next key frame is 98): the
first three snippets of every connection are damaged, the following ones clean.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import av
import pytest
from websockets.sync.client import connect

from tests.file_stream_server import FileStreamServer
from tests.service.live.service_process import API_KEY, ServiceProcess
from tests.shared_data import SHARED_DATA

LOSSY = SHARED_DATA / "field" / "hevc_packet_loss.ts"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not LOSSY.is_file(), reason=f"field input not found at {LOSSY}"),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("live-pyav")
    # FFmpeg's default probe (5 s): it keeps the damaged stretch before the key frame, which the service's 0.5 s
    # probe skips (its first frame is then the clean key frame, and no damaged snippet comes before an event).
    # The lossy capture is a test pattern, nothing like the default model's Ped2 footage: the scene check only
    # reports it here, so that the degraded flag alone decides which snippets may open an event.
    proc = ServiceProcess(
        root / "data",
        root / "service.log",
        allowed_schemes="rtsp,http,file",
        live_ffmpeg_options="",
        scene_check="report",
    ).start()
    yield proc
    proc.stop()


def _offset_of_frame(path, frame: int) -> int:
    """Byte offset of the packet of the `frame`-th video frame in a transport stream (decode order)."""
    with av.open(str(path)) as container:
        offsets = [p.pos for p in container.demux(video=0) if p.size]
    return offsets[frame]


def _messages(ws, finals: int, timeout: float) -> list[dict]:
    """Every message until `finals` final snippet messages came (snippets, events, states, notices)."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while sum(m["type"] == "snippet" and m["status"] == "final" for m in out) < finals:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"too few final snippets within {timeout}s: {out}")
        out.append(json.loads(ws.recv(timeout=remaining)))
    return out


def test_lossy_http_camera_marks_degraded_snippets_and_opens_no_event_on_them(
    service: ServiceProcess,
) -> None:
    camera_server = FileStreamServer(LOSSY, duration_s=8.0, start_offset=_offset_of_frame(LOSSY, 50))
    with camera_server as camera, service.client() as client:
        # Every scored snippet is "high": only the degraded flag can keep a snippet from opening an event.
        created = client.post(
            "/streams",
            json={
                "url": camera.url,
                "name": "lossy http camera",
                "events": {"enter_threshold": 0.0, "exit_threshold": 0.0},
            },
        )
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        try:
            with connect(
                f"{service.ws_base}/streams/{sid}/live?since=0&api_key={API_KEY}", open_timeout=10
            ) as ws:
                messages = _messages(ws, finals=10, timeout=90)
            view = client.get(f"/streams/{sid}").json()
        finally:
            assert client.delete(f"/streams/{sid}").status_code == 204
    finals = [m for m in messages if m["type"] == "snippet" and m["status"] == "final"]
    degraded = [m["index"] for m in finals if m["degraded"]]
    assert degraded and len(degraded) < len(finals), [(m["index"], m["degraded"]) for m in finals]
    assert view["decode_errors"] > 0 and view["width"] == 1280 and view["height"] == 720
    # The provisional message of a snippet already says it is degraded (the flag comes from the reader).
    provisional = {
        m["index"]: m["degraded"] for m in messages if m["type"] == "snippet" and m["status"] == "provisional"
    }
    assert all(provisional[m["index"]] == m["degraded"] for m in finals if m["index"] in provisional)
    by_start = {m["start_s"]: m for m in finals}
    starts = [n for m in finals for n in m["events"] if n["type"] == "start"]
    assert starts, "no event opened on the clean snippets"
    for notice in starts:
        opening = by_start[notice["start_s"]]
        assert not opening["degraded"], (notice, opening["index"])
    # Every scored snippet was "high", yet the damaged ones scored before the first event did not open one.
    first_opening = by_start[starts[0]["start_s"]]["index"]
    assert [i for i in degraded if i < first_opening], (degraded, first_opening)
