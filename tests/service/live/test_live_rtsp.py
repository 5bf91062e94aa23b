"""The live service end to end over real sockets: `refinevad serve` in a subprocess, a real GStreamer RTSP server
serving Ped2 footage (behind basic auth), WebSocket clients.

One service and one camera are shared by the module, in this order: scores arrive; credentials stay secret;
many clients; the camera is killed and restarted (recovery time measured); a camera that is down at registration;
a stalled client.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.rtsp_server import RtspServerProcess, free_port
from tests.service.live.conftest import requires_gstreamer
from tests.service.live.service_process import API_KEY, ServiceProcess, next_snippets

pytestmark = [pytest.mark.integration, requires_gstreamer]

USER, PASSWORD = "operator", "Sup3r-Secret-pw"


@pytest.fixture(scope="module")
def camera() -> Iterator[RtspServerProcess]:
    with RtspServerProcess(user=USER, password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("live-service")
    proc = ServiceProcess(root / "data", root / "service.log", live_client_queue=6).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stream_id(service: ServiceProcess, camera: RtspServerProcess) -> str:
    with service.client() as client:
        response = client.post("/streams", json={"url": camera.url_with_credentials(), "name": "ped2 cam"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def open_live(service: ServiceProcess, stream_id: str, since: int | None = None) -> ClientConnection:
    query = f"?since={since}" if since is not None else ""
    return connect(
        f"{service.ws_base}/streams/{stream_id}/live{query}",
        additional_headers={"X-API-Key": API_KEY},
        open_timeout=10,
    )


def wait_state(service: ServiceProcess, stream_id: str, states: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    with service.client() as client:
        while True:
            view = client.get(f"/streams/{stream_id}").json()
            if view["state"] in states:
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"stream stayed {view['state']} (wanted {states}): {view}")
            time.sleep(0.2)


def test_live_scores_arrive_provisional_then_final(service: ServiceProcess, stream_id: str) -> None:
    with open_live(service, stream_id) as ws:
        got = next_snippets(ws, 6, timeout=40)
    by_status: dict[str, list[int]] = {"provisional": [], "final": []}
    for m in got:
        assert m["stream_id"] == stream_id
        assert 0.0 <= m["score"] <= 1.0
        assert abs(sum(m["categories"].values()) - 1.0) < 1e-3
        assert m["end_s"] - m["start_s"] == pytest.approx(1.6, abs=1e-6)  # 16 frames at the camera's 10 fps
        assert m["wall_clock"] >= m["captured_at"]
        by_status[m["status"]].append(m["index"])
    assert by_status["provisional"] and by_status["final"]
    # Every final score is for a snippet that was first sent provisional, one snippet earlier.
    for index in by_status["final"]:
        assert index in by_status["provisional"] or index < min(by_status["provisional"])
    view = wait_state(service, stream_id, {"live"}, 5)
    assert view["width"] == 360 and view["height"] == 240
    assert view["snippets_processed"] >= 3


def test_credentials_never_returned_or_logged(service: ServiceProcess, stream_id: str) -> None:
    with service.client() as client:
        one = client.get(f"/streams/{stream_id}")
        every = client.get("/streams")
    for response in (one, every):
        assert PASSWORD not in response.text and USER not in response.text
    assert one.json()["url"].startswith("rtsp://***@127.0.0.1:")
    log = service.log()
    assert PASSWORD not in log and f"{USER}:" not in log
    assert API_KEY not in log


def test_many_clients_get_the_same_messages(service: ServiceProcess, stream_id: str) -> None:
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(open_live(service, stream_id)) for _ in range(12)]
        received = [next_snippets(ws, 4, timeout=30) for ws in clients]
    keyed = [{(m["index"], m["status"]): m["score"] for m in r} for r in received]
    common = set.intersection(*(set(k) for k in keyed))
    assert common, "the clients saw no snippet in common"
    for key in common:
        assert len({k[key] for k in keyed}) == 1


def test_resume_from_a_snippet_index(service: ServiceProcess, stream_id: str) -> None:
    with open_live(service, stream_id) as ws:
        first = next_snippets(ws, 4, timeout=30)
    resume = first[0]["index"]
    with open_live(service, stream_id, since=resume) as ws:
        replayed = next_snippets(ws, 3, timeout=10)
    assert replayed[0]["index"] == resume
    assert replayed[0]["score"] == first[0]["score"]


def test_camera_killed_and_restarted_recovers_on_its_own(
    service: ServiceProcess, stream_id: str, camera: RtspServerProcess
) -> None:
    with open_live(service, stream_id) as ws:
        before = next_snippets(ws, 2, timeout=30)
        camera.kill()
        view = wait_state(service, stream_id, {"reconnecting"}, timeout=15)
        assert view["last_error"]
        assert PASSWORD not in view["last_error"]
        time.sleep(2.0)  # stays down across several backoff attempts
        restarted = time.monotonic()
        camera.start()
        # The first message after the outage finalises the last snippet from before it; then new snippets come.
        after = next(m for m in next_snippets(ws, 3, timeout=40) if m["status"] == "provisional")
        recovery_s = time.monotonic() - restarted
    print(f"\nRTSP recovery: first new snippet {recovery_s:.1f}s after the camera came back")
    assert recovery_s < 20
    assert after["index"] > before[-1]["index"]
    assert after["gap"] is not None and "reconnect" in after["gap"]["reasons"]
    view = wait_state(service, stream_id, {"live"}, 10)
    assert view["reconnects"] >= 1


def test_first_connection_fails_then_succeeds(service: ServiceProcess) -> None:
    port = free_port()
    late = RtspServerProcess(port=port)
    with service.client() as client:
        created = client.post("/streams", json={"url": late.url, "name": "late camera"})
        assert created.status_code == 201
        sid = created.json()["id"]
        try:
            time.sleep(2.0)
            view = client.get(f"/streams/{sid}").json()
            assert view["state"] == "connecting"
            assert view["last_error"] and view["connect_attempts"] >= 2
            late.start()
            with open_live(service, sid) as ws:
                next_snippets(ws, 1, timeout=40)
            assert client.get(f"/streams/{sid}").json()["state"] == "live"
        finally:
            late.kill()
            assert client.delete(f"/streams/{sid}").status_code == 204


def _stalled_client(service: ServiceProcess, stream_id: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", service.port))
    request = (
        f"GET /streams/{stream_id}/live?since=0 HTTP/1.1\r\nHost: 127.0.0.1:{service.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nX-API-Key: {API_KEY}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def test_stalled_client_does_not_slow_others(service: ServiceProcess, stream_id: str) -> None:
    """A client that never reads only fills its own buffers; the reading client keeps the camera's pace.

    (Dropping it once its queue is full is covered in test_hub.py: over loopback the kernel's socket buffers absorb
    minutes of messages before the server's send would block.)
    """
    stalled = [_stalled_client(service, stream_id) for _ in range(3)]
    try:
        with open_live(service, stream_id) as ws:
            arrivals = []
            for message in next_snippets(ws, 8, timeout=30):
                arrivals.append((time.monotonic(), message["index"]))
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
        # Two messages per 1.6 s snippet; a gap well over one snippet would mean the pipeline was held up.
        assert max(gaps) < 3.0, gaps
        with service.client() as client:
            assert (
                client.get(f"/streams/{stream_id}").json()["clients"] == 3
            )  # the stalled ones, still served
    finally:
        for sock in stalled:
            sock.close()


def test_websocket_requires_a_key(service: ServiceProcess, stream_id: str) -> None:
    # A connection refused before the handshake completes is answered with HTTP 403.
    for query, headers in (("", {}), ("", {"X-API-Key": "wrong"}), ("?api_key=wrong", {})):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{service.ws_base}/streams/{stream_id}/live{query}", additional_headers=headers)
        assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(f"{service.ws_base}/streams/nope/live", additional_headers={"X-API-Key": API_KEY})
