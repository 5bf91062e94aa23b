"""Hostile input against the running service: oversized and malformed JSON, wrong content types, multipart bodies
built to exhaust memory or to stall, source URLs that point at local files, loopback or cloud-metadata addresses,
path traversal in every name, and tiny videos that decode to something huge. Every one gets a clear 4xx JSON
answer, promptly, and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.live.urls import InvalidSourceUrl, check_source_url
from tests.reliability.conftest import proc_stats, server_pid
from tests.service.conftest import API_KEY, ServerProcess, assert_error, upload_video, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ENV = {
    "REFINEVAD_MAX_UPLOAD_MB": "64",
    "REFINEVAD_SYNC_MAX_SECONDS": "10",
    "REFINEVAD_MAX_VIDEO_FRAMES": "1000",
    "REFINEVAD_UPLOAD_IDLE_TIMEOUT_S": "2",
    # An upload must average 1 KiB/s once 3 s have passed, and be complete within 8 s.
    "REFINEVAD_UPLOAD_MIN_RATE_KIB_S": "1",
    "REFINEVAD_UPLOAD_RATE_GRACE_S": "3",
    "REFINEVAD_UPLOAD_MAX_DURATION_S": "8",
    # A JSON body must be complete within 4 s of its first byte.
    "REFINEVAD_JSON_BODY_MAX_S": "4",
    # One loopback address only: the streams these tests create never reach or look up any other host. What
    # the default (empty) list refuses is checked without connecting in test_allow_list_decisions.
    "REFINEVAD_ALLOWED_HOSTS": "127.0.0.2",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Network schemes, streams on 127.0.0.2 only; 64 MiB uploads; at most 1000 frames."""
    proc = ServerProcess(tmp_path_factory.mktemp("bad-input") / "data", env=ENV).start()
    yield proc
    proc.stop()


def raw_request(server: ServerProcess, head: bytes, body: bytes = b"", read_timeout: float = 30) -> bytes:
    """Send bytes as they are (no client-side normalisation) and return the whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as sock:
        sock.sendall(head + body)
        return read_reply(sock)


def read_reply(sock: socket.socket) -> bytes:
    """One HTTP answer: its head and its Content-Length body (or whatever came before the close)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        lengths = [
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ]
        if rest and lengths and len(rest) >= lengths[0]:
            return received


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def _key_header() -> bytes:
    return f"X-API-Key: {API_KEY}\r\n".encode()


def test_oversized_json_is_refused_before_it_is_read(server: ServerProcess, report) -> None:
    for path in (b"/streams",):
        started = time.perf_counter()
        reply = raw_request(
            server,
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: t\r\n"
            + _key_header()
            + b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n",
        )
        report("json_1GiB_declared_refused_after_s", time.perf_counter() - started)
        assert status_of(reply) == 413 and b'"payload_too_large"' in reply
    # Chunked (no declared length): the server stops once the limit is passed.
    pid = server_pid(server)
    rss_before = proc_stats(pid).rss_mb
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /streams HTTP/1.1\r\nHost: t\r\n"
            + _key_header()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b'{"name": "' + b"a" * 65536
        reply = b""
        while sent < 64 * 2**20 and not reply:
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                break
            sent += len(chunk)
            sock.settimeout(0.001)
            with contextlib.suppress(TimeoutError, BlockingIOError):
                reply = sock.recv(65536)
            sock.settimeout(30)
        if not reply:
            reply = sock.recv(65536)
    report("json_chunked_bytes_sent_before_refusal", sent)
    report("json_chunked_rss_growth_mb", proc_stats(pid).rss_mb - rss_before)
    assert status_of(reply) == 413
    assert sent < 8 * 2**20


def test_malformed_json_and_wrong_content_types(server: ServerProcess) -> None:
    with server.client() as client:
        bodies = [
            (b'{"url": "rtsp://127.0.0.1/x", "name":', "application/json"),
            (b"\xff\xfe\x00garbage", "application/json"),
            (
                b"[" * 30000 + b"]" * 30000,
                "application/json",
            ),  # nesting deep enough to break a recursive parser
            (b'{"url": "rtsp://127.0.0.1/x", "name": "x"}', "text/plain"),
            (b"url=rtsp://127.0.0.1/x&name=x", "application/x-www-form-urlencoded"),
            (b'{"url": "rtsp://127.0.0.1/x", "name": "x", "extra": 1}', "application/json"),
            (b'{"url": 5, "name": ["x"]}', "application/json"),
            (b'{"url": "' + b"r" * 5000 + b'", "name": "x"}', "application/json"),
        ]
        for body, content_type in bodies:
            response = client.post("/streams", content=body, headers={"Content-Type": content_type})
            assert 400 <= response.status_code < 500, (body[:40], response.status_code, response.text[:200])
            # Refused as a body, before its URL was even looked at.
            assert assert_error(response, response.status_code)["error"] != "invalid_stream_url"
        assert client.get("/streams").json()["total"] == 0
        # A video upload sent as JSON, or with no body at all.
        assert_error(client.post("/analyze", json={"file": "x"}), 415)
        assert_error(client.post("/analyze"), 415)


def _multipart_head(boundary: bytes = b"XyZ") -> bytes:
    return (
        b"POST /analyze HTTP/1.1\r\nHost: t\r\n"
        + _key_header()
        + b"Content-Type: multipart/form-data; boundary="
        + boundary
        + b"\r\n"
    )


def test_hostile_multipart_bodies(server: ServerProcess, report) -> None:
    pid = server_pid(server)
    rss_before = proc_stats(pid).rss_mb
    # A part header that never ends (8 MiB): refused without being collected.
    huge_header = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="' + b"a" * (8 * 2**20)
    started = time.perf_counter()
    reply = raw_request(
        server, _multipart_head() + f"Content-Length: {len(huge_header)}\r\n\r\n".encode(), huge_header
    )
    report("huge_part_header_refused_after_s", time.perf_counter() - started)
    report("huge_part_header_rss_growth_mb", proc_stats(pid).rss_mb - rss_before)
    assert status_of(reply) == 400 and b"header" in reply
    # A boundary far longer than the 70 characters RFC 2046 allows.
    body = b"--" + b"B" * 5000 + b"\r\n"
    reply = raw_request(
        server, _multipart_head(b"B" * 5000) + f"Content-Length: {len(body)}\r\n\r\n".encode(), body
    )
    assert 400 <= status_of(reply) < 500
    # Thousands of tiny form fields.
    many = (
        b"".join(
            b'--XyZ\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(20000)
        )
        + b"--XyZ--\r\n"
    )
    reply = raw_request(server, _multipart_head() + f"Content-Length: {len(many)}\r\n\r\n".encode(), many)
    assert 400 <= status_of(reply) < 500
    assert list((server.data_dir / "uploads").iterdir()) == []


def test_a_stalled_upload_is_cut_off(server: ServerProcess, report) -> None:
    """A client that declares a body and stops sending must not hold a connection and a spool file forever."""
    head = _multipart_head() + b"Content-Length: 1000000\r\n\r\n"
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + part + b"\0" * 1000)
        started = time.perf_counter()
        reply = read_reply(sock)
        waited = time.perf_counter() - started
    report("stalled_upload_cut_after_s", waited)
    assert status_of(reply) == 408 and b'"upload_timeout"' in reply
    assert waited < 10
    assert list((server.data_dir / "uploads").iterdir()) == []
    # The same for a JSON body, sent without a key (bodies are read before keys are checked).
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /streams HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"url": '
        )
        started = time.perf_counter()
        reply = read_reply(sock)
        report("stalled_json_cut_after_s", time.perf_counter() - started)
    assert status_of(reply) == 408 and b'"request_timeout"' in reply


def test_a_dripping_json_body_is_cut_off_at_its_deadline(server: ServerProcess, report) -> None:
    """A byte every 0.5 s never trips the 2 s idle limit; the 4 s total deadline still cuts it off."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /streams HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        started = time.perf_counter()
        sock.settimeout(0.5)
        reply = b""
        while time.perf_counter() - started < 20 and not reply:
            try:
                sock.sendall(b" ")
                reply = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            reply += read_reply(sock)
        waited = time.perf_counter() - started
    report("json_drip_cut_after_s", waited)
    assert status_of(reply) == 408 and b"took longer than the limit of 4 s" in reply, reply[:300]
    assert 3.5 < waited < 10


def _drip(server: ServerProcess, piece: bytes, every_s: float, out: list) -> None:
    """An upload that sends `piece` every `every_s` until the server answers; appends (reply, seconds)."""
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n'
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_multipart_head() + b"Content-Length: 1000000\r\n\r\n" + part)
        started = time.perf_counter()
        while time.perf_counter() - started < 30:
            if select.select([sock], [], [], every_s)[0]:
                break
            try:
                sock.sendall(piece)
            except OSError:  # the server answered and closed while we were sending
                break
        out.append((read_reply(sock), time.perf_counter() - started))


def test_slow_drip_uploads_are_cut_off_and_others_are_served(
    server: ServerProcess, footage: dict[str, Path], report
) -> None:
    """20 clients send 1 byte every 0.5 s (the idle timeout alone would keep them forever); a normal upload from
    another client meanwhile is received at once; each drip gets 408 after the grace period, spool file removed."""
    drips: list[tuple[bytes, float]] = []
    threads = [threading.Thread(target=_drip, args=(server, b"\0", 0.5, drips)) for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    assert len(list((server.data_dir / "uploads").iterdir())) >= 20  # all 20 are spooling
    with server.client() as client:
        started = time.perf_counter()
        normal = upload_video(client, footage["short"], background=True)
        report("normal_upload_during_20_drips_s", time.perf_counter() - started)
        assert normal.status_code == 202, normal.text
        assert not drips  # received while every drip was still connected
        for thread in threads:
            thread.join(30)
        assert wait_final(client, normal.json()["id"])["status"] == "succeeded"
    report("drip_cut_after_s", max(seconds for _, seconds in drips))
    assert len(drips) == 20
    for reply, seconds in drips:
        assert status_of(reply) == 408 and b'"upload_too_slow"' in reply, reply[:300]
        assert 2.5 <= seconds < 8  # at the 3 s grace period (less timer slack)
    assert list((server.data_dir / "uploads").iterdir()) == []


def test_an_upload_past_the_total_deadline_is_cut_off(server: ServerProcess, report) -> None:
    """Fast enough (4 KiB/s, above the minimum rate) but endless: cut at the 8 s deadline."""
    out: list[tuple[bytes, float]] = []
    _drip(server, b"\0" * 2048, 0.5, out)
    [(reply, seconds)] = out
    report("endless_upload_cut_after_s", seconds)
    assert status_of(reply) == 408 and b'"upload_deadline"' in reply, reply[:300]
    assert 7.5 <= seconds < 12
    assert list((server.data_dir / "uploads").iterdir()) == []


REFUSED_SOURCES = [
    "file:///etc/passwd",
    "/etc/passwd",
    "file://localhost/etc/shadow",
    "rtsp://169.254.169.254/latest",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://[fe80::1]/cam",
    "rtsp://127.0.0.1/cam",
    "rtsp://127.0.0.53:554/cam",
    "rtsp://localhost/cam",
    "rtsp://LocalHost./cam",
    "rtsp://cam.localhost/cam",
    "rtsp://127.1/cam",
    "rtsp://2130706433/cam",
    "rtsp://0x7f000001/cam",
    "rtsp://0177.0.0.1/cam",
    "rtsp://0.0.0.0/cam",
    "rtsp://[::1]/cam",
    "rtsp://[::ffff:127.0.0.1]/cam",
    "rtsp://[::]/cam",
    "rtsp://user:pw@127.0.0.1:554/cam",
]


def test_sources_outside_the_allow_lists_are_refused(server: ServerProcess) -> None:
    with server.client() as client:
        for url in REFUSED_SOURCES:
            body = assert_error(
                client.post("/streams", json={"url": url, "name": "x"}), 422, "invalid_stream_url"
            )
            assert "pw@" not in body["message"]
        assert client.get("/streams").json()["total"] == 0


def test_allow_list_decisions() -> None:
    """What a default configuration lets through, and what naming a host allows (checked without connecting)."""
    schemes = ["rtsp", "rtsps", "http", "https"]
    for url in (
        "rtsp://10.0.0.5/s",
        "rtsp://192.168.1.20:554/s",
        "https://cam.example/feed",
        "rtsp://[2001:db8::5]/s",
    ):
        assert check_source_url(url, schemes, []) == url
    assert check_source_url("rtsp://127.0.0.1/cam", schemes, ["127.0.0.1"]) == "rtsp://127.0.0.1/cam"
    assert check_source_url("rtsp://localhost/cam", schemes, ["localhost"]) == "rtsp://localhost/cam"
    for url in REFUSED_SOURCES:
        with pytest.raises(InvalidSourceUrl):
            check_source_url(url, schemes, [])


TRAVERSAL_NAMES = [
    "../../../../tmp/owned.mp4",
    "..\\..\\owned.mp4",
    "/etc/cron.d/owned.mp4",
    "a/../../owned.mp4",
]


def test_path_traversal_in_names(server: ServerProcess, footage: dict[str, Path]) -> None:
    clip = footage["short"].read_bytes()
    spool = server.data_dir / "uploads"
    with server.client() as client:
        for name in TRAVERSAL_NAMES:
            response = client.post("/analyze", files={"file": (name, clip, "video/mp4")})
            assert response.status_code == 200, response.text
            assert response.json()["filename"] == name  # kept as a label only
        for path in ("/tmp/owned.mp4", "/etc/cron.d/owned.mp4", str(server.data_dir / "owned.mp4")):
            assert not Path(path).exists()
        # A synchronous answer can leave a moment before its job's clean-up removes the spooled upload.
        deadline = time.monotonic() + 5.0
        while list(spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(spool.iterdir()) == []
        created = client.post("/streams", json={"url": "rtsp://127.0.0.2:9/cam", "name": "../../etc/passwd"})
        assert created.status_code == 201
        assert client.delete(f"/streams/{created.json()['id']}").status_code == 204
    # Ids and names in paths, sent raw so no client normalises them first.
    for target in (
        b"/jobs/../../etc/passwd",
        b"/jobs/..%2F..%2Fetc%2Fpasswd",
        b"/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        b"/streams/..%2F..%2Fetc%2Fpasswd",
        b"/streams/%00",
        b"/ui/..%2F..%2Fservice%2Fapp.py",
        b"/ui/../../service/app.py",
        b"/ui/%2e%2e/%2e%2e/etc/passwd",
    ):
        reply = raw_request(server, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + _key_header() + b"\r\n")
        assert status_of(reply) in (400, 404), (target, reply[:300])
        assert b"root:" not in reply and b"create_app" not in reply


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny files that decode to something huge: one 12000x12000 frame (400 KB; 430 MB as decoded BGR);
    2000 frames of 64x64 (the limit here is 1000)."""
    root = tmp_path_factory.mktemp("bombs")

    def ffmpeg(*args: str) -> None:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, timeout=120)

    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=black:s=12000x12000:r=1",
        "-frames:v",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        str(root / "wide.mp4"),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=black:s=64x64:r=100",
        "-frames:v",
        "2000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        str(root / "long.mp4"),
    )
    # MPEG-TS carries no frame count: only decoding finds out how long it is.
    ffmpeg("-i", str(root / "long.mp4"), "-c", "copy", "-f", "mpegts", str(root / "long.ts"))
    return {name: root / name for name in ("wide.mp4", "long.mp4", "long.ts")}


def test_videos_that_decode_to_something_huge_are_refused(
    server: ServerProcess, bombs: dict[str, Path], report
) -> None:
    pid = server_pid(server)
    with server.client() as client:
        succeeded = client.get("/jobs", params={"status": "succeeded"}).json()["total"]
        for name in ("wide.mp4", "long.mp4"):
            before = proc_stats(pid)
            started = time.perf_counter()
            body = assert_error(upload_video(client, bombs[name]), 422, "invalid_video")
            after = proc_stats(pid)
            report(f"{name}_bytes", bombs[name].stat().st_size)
            report(f"{name}_refused_after_s", time.perf_counter() - started)
            report(f"{name}_peak_rss_growth_mb", after.peak_rss_mb - before.peak_rss_mb)
            assert "limit" in body["message"]
            # Refused from the container header, before the frame is decoded to RGB (430 MB for wide.mp4; FFmpeg's
            # stream probing alone still decodes it once in YUV).
            assert after.peak_rss_mb - before.peak_rss_mb < 12000 * 12000 * 3 / 2**20
            assert time.perf_counter() - started < 2
        response = upload_video(client, bombs["long.ts"])
        if response.status_code == 202:  # unknown length: decoding stops at the limit
            job = wait_final(client, response.json()["id"], timeout=60)
            assert job["status"] == "failed" and "limit of 1000 frames" in job["error"], job
            report("long.ts", "job failed at the frame limit")
        else:
            assert_error(response, 422, "invalid_video")
            report("long.ts", "refused at upload")
        assert client.get("/jobs", params={"status": "succeeded"}).json()["total"] == succeeded
    assert list((server.data_dir / "uploads").iterdir()) == []
