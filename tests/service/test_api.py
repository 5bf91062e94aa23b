"""The HTTP API against the real server over a socket, with real Ped2 footage encoded to mp4."""

from __future__ import annotations

import base64
import itertools
import math
import socket
import sqlite3
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.service.conftest import API_KEY, ServerProcess, assert_error, upload_video, wait_final

pytestmark = pytest.mark.integration


def _check_result(result: dict, frames: int, fps: float, frame_scores: bool) -> None:
    model = result["model"]
    names = model["category_names"]
    assert names and model["backbone"]["name"] in ("motion", "clip", "efficientnet_lite0", "two_stream")
    # An untrained model is always flagged.
    assert (result["untrained_warning"] is None) == model["trained"]
    assert result["video"]["frame_count"] == frames
    assert result["video"]["fps"] == pytest.approx(fps)
    snippets = result["snippets"]
    assert len(snippets) == math.ceil(frames / 16) == result["num_snippets"]
    assert [s["index"] for s in snippets] == list(range(len(snippets)))
    # A snippet spans the times of its first and last frame.
    assert snippets[0]["start_s"] == 0.0
    for before, after in itertools.pairwise(snippets):
        assert before["end_s"] == pytest.approx(before["start_s"] + 15 / fps)
        assert after["start_s"] == pytest.approx(before["end_s"] + 1 / fps)
    assert snippets[-1]["end_s"] == pytest.approx((frames - 1) / fps)
    assert result["video"]["duration_s"] == pytest.approx(frames / fps)
    assert not any(s["degraded"] for s in snippets)
    decode = result["decode"]
    assert decode["frames_decoded"] == frames and decode["frames_announced"] in (frames, None)
    assert decode["truncated"] is False and decode["decode_errors"] == 0
    assert decode["geometry_changes"] == [] and decode["timestamp_jumps"] == []
    for snippet in snippets:
        assert 0.0 <= snippet["score"] <= 1.0
        assert list(snippet["categories"]) == names
        assert sum(snippet["categories"].values()) == pytest.approx(1.0, abs=1e-4)
    if frame_scores:
        assert len(result["frame_scores"]) == frames
    else:
        assert result["frame_scores"] is None
    for event in result["events"]:
        assert 0.0 <= event["start_s"] <= event["end_s"] <= frames / fps + 1e-6
        assert event["dominant_category"] in names


def _stored_state(server: ServerProcess) -> tuple[list[tuple], list[str]]:
    """Everything persisted: all job rows and event rows, and the files in the upload spool."""
    with sqlite3.connect(server.data_dir / "refinevad.sqlite3") as conn:
        rows = conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        rows += conn.execute("SELECT * FROM events ORDER BY id").fetchall()
    return rows, sorted(p.name for p in (server.data_dir / "uploads").iterdir())


def test_health_is_open_everything_else_needs_a_key(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        health = anon.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        for method, path in (("GET", "/ready"), ("GET", "/metrics"), ("GET", "/jobs"), ("POST", "/analyze")):
            missing = anon.request(method, path)
            body = assert_error(missing, 401, "unauthorized")
            assert "X-API-Key" in body["message"]
            assert missing.headers["www-authenticate"] == "Bearer"
            assert_error(anon.request(method, path, headers={"X-API-Key": "wrong"}), 403, "forbidden")
            assert_error(anon.request(method, path, headers={"Authorization": "Bearer wrong"}), 403)
            assert_error(anon.request(method, path, headers={"Authorization": f"Basic {API_KEY}"}), 401)
        assert anon.get("/jobs", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert anon.get("/jobs", headers={"X-API-Key": API_KEY}).status_code == 200
        # CORS is off unless origins are configured.
        cross = anon.get("/jobs", headers={"X-API-Key": API_KEY, "Origin": "https://console.example"})
        assert "access-control-allow-origin" not in cross.headers


def test_ready_reports_the_model(server: ServerProcess) -> None:
    with server.client() as client:
        ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["state"] == "ready"
    assert ready["device"] == "cpu"
    assert ready["model"]["backbone"]["dim"] > 0
    # The shipped default is a seed ensemble: /ready and the start-up log both say so.
    assert ready["model"]["ensemble_members"] == 5 and ready["model"]["trained"] is True
    assert "(seed ensemble of 5 heads)" in server.log_tail(20000)


def test_short_video_is_answered_synchronously(server: ServerProcess, footage: dict[str, Path]) -> None:
    with server.client() as client:
        response = upload_video(client, footage["short"], frame_scores="true")
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["attempts"] == 1
        assert response.headers["location"] == f"/jobs/{job['id']}"
        _check_result(job["result"], frames=80, fps=10.0, frame_scores=True)
        # The stored job gives back the same result.
        again = client.get(f"/jobs/{job['id']}").json()
        assert again["result"] == job["result"]


def test_event_snapshots_on_request(server: ServerProcess, footage: dict[str, Path]) -> None:
    with server.client() as client:
        plain = upload_video(client, footage["short"]).json()
        assert plain["snapshots"] is False and plain["event_snapshots"] is None
        job = upload_video(client, footage["short"], snapshots="true").json()
        assert job["status"] == "succeeded" and job["snapshots"] is True
        events, snapshots = job["result"]["events"], job["event_snapshots"]
        assert events and [s["event"] for s in snapshots] == list(range(len(events)))  # threshold 0 here
        assert client.get(f"/jobs/{job['id']}").json()["event_snapshots"] == snapshots
    capture = cv2.VideoCapture(str(footage["short"]))
    for snapshot, event in zip(snapshots, events, strict=True):
        assert event["start_s"] <= snapshot["peak_s"] <= event["end_s"]
        image = cv2.imdecode(
            np.frombuffer(base64.b64decode(snapshot["jpeg_base64"]), np.uint8), cv2.IMREAD_COLOR
        )
        assert image.shape == (snapshot["height"], snapshot["width"], 3)
        # The very frame it names, from the file itself.
        capture.set(cv2.CAP_PROP_POS_FRAMES, snapshot["frame"])
        ok, frame = capture.read()
        assert ok and frame.shape == image.shape
        assert float(np.abs(frame.astype(int) - image.astype(int)).mean()) < 6
    capture.release()


def test_long_video_gets_a_job_that_completes(server: ServerProcess, footage: dict[str, Path]) -> None:
    with server.client() as client:
        response = upload_video(client, footage["clip"])
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] in ("queued", "running") and job["result"] is None
        assert job["video"]["duration_s"] == pytest.approx(18.0)
        assert response.headers["location"] == f"/jobs/{job['id']}"
        done = wait_final(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0
    _check_result(done["result"], frames=180, fps=10.0, frame_scores=False)
    # Events of the result are stored with the job (threshold 0 on this server: the whole clip is one event).
    assert len(done["result"]["events"]) == 1
    with sqlite3.connect(server.data_dir / "refinevad.sqlite3") as conn:
        stored = conn.execute(
            "SELECT start_s, end_s, dominant_category FROM events WHERE source_kind='job' AND source_id=?",
            (done["id"],),
        ).fetchall()
    event = done["result"]["events"][0]
    assert stored == [(event["start_s"], event["end_s"], event["dominant_category"])]


def test_background_flag_forces_a_job(server: ServerProcess, footage: dict[str, Path]) -> None:
    with server.client() as client:
        response = upload_video(client, footage["short"], background="true")
        assert response.status_code == 202
        done = wait_final(client, response.json()["id"])
    assert done["status"] == "succeeded"


def test_list_filter_page_and_delete(server: ServerProcess, footage: dict[str, Path]) -> None:
    with server.client() as client:
        ids = [upload_video(client, footage["short"]).json()["id"] for _ in range(3)]
        listing = client.get("/jobs", params={"status": "succeeded", "limit": 500}).json()
        listed = [item["id"] for item in listing["items"]]
        assert set(ids) <= set(listed)
        assert all(item["status"] == "succeeded" for item in listing["items"])
        assert "result" not in listing["items"][0]
        # Newest first, and pages do not overlap.
        assert listed.index(ids[2]) < listed.index(ids[0])
        page1 = client.get("/jobs", params={"limit": 2, "offset": 0}).json()
        page2 = client.get("/jobs", params={"limit": 2, "offset": 2}).json()
        assert page1["total"] == page2["total"] >= 3
        assert not {i["id"] for i in page1["items"]} & {i["id"] for i in page2["items"]}

        assert client.delete(f"/jobs/{ids[0]}").status_code == 204
        assert_error(client.get(f"/jobs/{ids[0]}"), 404, "job_not_found")
        assert_error(client.delete(f"/jobs/{ids[0]}"), 404, "job_not_found")
        assert client.get(f"/jobs/{ids[1]}").status_code == 200


def _multipart(filename: str, content: bytes, content_type: str = "video/mp4", name: str = "file") -> bytes:
    return (
        b"--XyZ\r\n"
        + f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
        + f"Content-Type: {content_type}\r\n\r\n".encode()
        + content
        + b"\r\n--XyZ--\r\n"
    )


MULTIPART = {"Content-Type": "multipart/form-data; boundary=XyZ"}


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    server: ServerProcess, footage: dict[str, Path]
) -> None:
    clip = footage["short"].read_bytes()
    with server.client() as client:
        assert upload_video(client, footage["short"]).status_code == 200  # something stored to protect
        before = _stored_state(server)

        def post(content: bytes, headers: dict[str, str] = MULTIPART, **kw) -> httpx.Response:
            return client.post("/analyze", content=content, headers=headers, **kw)

        # What is not video is refused by its content (415), whatever its name or declared type says.
        body = assert_error(post(_multipart("notes.mp4", b"this is not a video\n" * 50)), 415, "not_video")
        assert "notes.mp4" in body["message"] and "uploads" not in body["message"]  # no server paths
        png = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
        assert_error(post(_multipart("frame.mp4", png, content_type="video/mp4")), 415, "not_video")
        assert_error(post(_multipart("cut.mp4", clip[: len(clip) // 2])), 422, "invalid_video")
        assert_error(post(_multipart("empty.mp4", b"")), 422, "empty_file")
        assert_error(
            post(b'{"file": "x"}', headers={"Content-Type": "application/json"}),
            415,
            "unsupported_media_type",
        )
        assert_error(post(_multipart("clip.mp4", clip[:1000], name="video")), 400, "missing_file")
        wrong_field = assert_error(post(_multipart("clip.mp4", clip, name="video")), 400, "missing_file")
        assert "'video'" in wrong_field["message"] and "'file'" in wrong_field["message"]
        assert_error(post(b"--XyZ\r\ngarbage without headers"), 400)
        assert_error(post(b"", headers={"Content-Type": "multipart/form-data"}), 400, "bad_multipart")
        assert_error(client.post("/analyze", params={"frame_scores": "maybe"}), 422, "invalid_request")
        assert_error(client.get("/jobs", params={"limit": 0}), 422, "invalid_request")
        assert_error(client.get("/jobs", params={"status": "lost"}), 422, "invalid_request")
        assert_error(client.get("/jobs/does-not-exist"), 404, "job_not_found")
        assert_error(client.delete("/jobs/does-not-exist"), 404, "job_not_found")
        assert_error(client.get("/no/such/route"), 404)
        after = _stored_state(server)
    assert after == before


def _read_response(sock: socket.socket, received: bytes = b"") -> bytes:
    """Read one HTTP response (head and Content-Length body) from a raw socket."""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_oversized_upload_is_refused_while_streaming(server: ServerProcess) -> None:
    """Without Content-Length (chunked), the server stops reading once the 1 MiB limit is passed."""
    before = _stored_state(server)
    head = _multipart("big.mp4", b"")[: -len(b"\r\n--XyZ--\r\n")]
    chunk = b"\0" * 65536

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /analyze HTTP/1.1\r\nHost: test\r\n"
            + f"X-API-Key: {API_KEY}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        reply = b""
        sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        # Offer up to 64 MiB; the refusal must come long before (the server reads ~1 MiB, the rest of what was
        # sent by then sits in socket buffers).
        while sent < 64 * 1024 * 1024:
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            sock.settimeout(0.001)
            try:
                reply = sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                reply = b""
            sock.settimeout(30)
            if reply:
                break
        sock.settimeout(30)
        reply = _read_response(sock, reply)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"payload_too_large"' in reply
    assert sent < 16 * 1024 * 1024, f"the client could send {sent} bytes before the server refused"
    assert _stored_state(server) == before


def test_oversized_content_length_is_refused_before_the_body(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /analyze HTTP/1.1\r\nHost: test\r\n"
            + f"X-API-Key: {API_KEY}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 1073741824\r\n\r\n"
        )
        # Not a byte of the body is sent; the answer comes anyway.
        reply = _read_response(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"payload_too_large" in reply


def test_metrics_count_the_work(server: ServerProcess, footage: dict[str, Path]) -> None:
    with server.client() as client:
        assert upload_video(client, footage["short"]).status_code == 200
        text = client.get("/metrics").text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['refinevad_frames_processed_total{source="file"}'] >= 80
    assert values['refinevad_snippets_processed_total{source="file"}'] >= 5
    assert values['refinevad_backbone_latency_seconds_count{source="file"}'] >= 1
    assert values['refinevad_head_latency_seconds_count{source="file"}'] >= 1
    assert values['refinevad_job_duration_seconds_count{status="succeeded"}'] >= 1
    assert values['refinevad_queue_depth{queue="jobs"}'] == 0
    assert values["refinevad_model_ready"] == 1
    assert values['refinevad_http_requests_total{method="POST",route="/analyze",status="200"}'] >= 1


def test_openapi_schema_is_complete(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as anon:
        schema = anon.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/health", "/ready", "/metrics", "/analyze", "/jobs", "/jobs/{job_id}"} <= set(paths)
    analyze = paths["/analyze"]["post"]
    upload = analyze["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file"] and upload["properties"]["file"]["format"] == "binary"
    for status in ("200", "202", "401", "403", "413", "415", "422"):
        assert status in analyze["responses"], status
    job_schema = analyze["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert job_schema.endswith("/Job")
    components = schema["components"]
    assert {"Job", "JobList", "AnalysisResult", "SnippetScore", "Event", "ErrorBody"} <= set(
        components["schemas"]
    )
    assert {"APIKeyHeader", "HTTPBearer"} <= set(components["securitySchemes"])
    assert "security" not in paths["/health"]["get"]
    assert paths["/jobs/{job_id}"]["get"]["security"]
