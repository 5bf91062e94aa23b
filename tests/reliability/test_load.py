"""Load on the running service: concurrent uploads within the limits, 50 WebSocket clients on one stream, and a
bounded run of stream add/remove churn over every kind of source with resident memory, open file descriptors and
threads measured before and after (from /proc/<pid>)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.footage import PED2_ROOT
from tests.reliability.conftest import LIVE_ENV, ProcStats, proc_stats, server_pid, wait_for
from tests.rtsp_server import RtspServerProcess, free_port, gstreamer_available
from tests.service.conftest import API_KEY, REPO_ROOT, ServerProcess, upload_video

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ENV = {**LIVE_ENV, "REFINEVAD_MAX_UPLOAD_MB": "8", "REFINEVAD_SYNC_MAX_SECONDS": "10"}
CLIP = PED2_ROOT / "testing" / "frames" / "01"
UPLOADS = 12
WS_CLIENTS = 50
CHURN_S = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("load") / "data", env=ENV).start()
    yield proc
    proc.stop()


def test_concurrent_uploads(server: ServerProcess, footage: dict[str, Path], report) -> None:
    pid = server_pid(server)
    before = proc_stats(pid)

    def one(_: int) -> tuple[int, float]:
        with server.client(timeout=300) as client:
            started = time.perf_counter()
            response = upload_video(client, footage["short"])
            return response.status_code, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(UPLOADS) as pool:
        results = list(pool.map(one, range(UPLOADS)))
    wall = time.perf_counter() - started
    latencies = sorted(latency for _, latency in results)
    report("uploads", UPLOADS)
    report("uploads_wall_s", wall)
    report("upload_latency_p50_s", statistics.median(latencies))
    report("upload_latency_max_s", latencies[-1])
    assert [status for status, _ in results] == [200] * UPLOADS
    with server.client() as client:
        assert client.get("/jobs", params={"status": "succeeded"}).json()["total"] >= UPLOADS
    after = wait_for(lambda: (s := proc_stats(pid)).fds <= before.fds + 2 and s, 10, "connections to close")
    report("process_before", str(before))
    report("process_after", str(after))
    assert list((server.data_dir / "uploads").iterdir()) == []


async def _listen(url: str, headers: dict[str, str], count: int, timeout: float) -> list[tuple[float, dict]]:
    async with connect(url, additional_headers=headers, open_timeout=30) as ws:
        out: list[tuple[float, dict]] = []
        deadline = time.monotonic() + timeout
        while len([m for _, m in out if m.get("status") == "provisional"]) < count:
            message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if message["type"] == "snippet":
                out.append((time.monotonic(), message))
        return out


def test_fifty_websocket_clients_on_one_stream(server: ServerProcess, report) -> None:
    pid = server_pid(server)
    with server.client() as client:
        sid = client.post("/streams", json={"url": str(CLIP), "name": "busy", "loop": True}).json()["id"]
    try:
        wait_for(lambda: client_view(server, sid)["state"] == "live", 20, "the stream to go live")
        before = proc_stats(pid)
        url = f"{server.url.replace('http://', 'ws://')}/streams/{sid}/live"

        async def everyone() -> list[list[tuple[float, dict]]]:
            return await asyncio.gather(*(_listen(url, server.headers, 4, 60) for _ in range(WS_CLIENTS)))

        started = time.perf_counter()
        received = asyncio.run(everyone())
        report("clients", WS_CLIENTS)
        report("all_got_4_snippets_after_s", time.perf_counter() - started)
        # Every client saw the same score for the same message; the spread of arrival times across clients.
        by_key: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for messages in received:
            for arrived, m in messages:
                by_key.setdefault((m["index"], m["status"]), []).append((arrived, m["score"]))
        shared = {key: values for key, values in by_key.items() if len(values) == WS_CLIENTS}
        assert shared, "no message reached all clients"
        for values in shared.values():
            assert len({score for _, score in values}) == 1
        spread = max(max(t for t, _ in v) - min(t for t, _ in v) for v in shared.values())
        report("fan_out_spread_max_s", spread)
        assert spread < 1.0
        after = wait_for(lambda: (s := proc_stats(pid)).fds <= before.fds + 2 and s, 10, "sockets to close")
        report("process_before", str(before))
        report("process_after", str(after))
        view = client_view(server, sid)
        assert view["clients"] == 0 and view["state"] == "live"
    finally:
        with server.client() as client:
            client.delete(f"/streams/{sid}")


def client_view(server: ServerProcess, sid: str) -> dict:
    with server.client() as client:
        return client.get(f"/streams/{sid}").json()


def test_add_remove_churn_keeps_memory_descriptors_and_threads_flat(
    server: ServerProcess, hostile_peers, report
) -> None:
    silent, garbage = hostile_peers("silent"), hostile_peers("garbage")
    camera = RtspServerProcess().start() if gstreamer_available() else None
    sources = [str(CLIP), f"rtsp://127.0.0.1:{silent.port}/cam", f"http://127.0.0.1:{garbage.port}/v.mjpg"]
    if camera is not None:
        sources.append(camera.url)
    pid = server_pid(server)

    def churn(seconds: float) -> int:
        rounds = 0
        deadline = time.monotonic() + seconds
        with server.client() as client:
            while time.monotonic() < deadline:
                ids = []
                for k, url in enumerate(sources):
                    response = client.post("/streams", json={"url": url, "name": f"churn {rounds}.{k}"})
                    assert response.status_code == 201, response.text
                    ids.append(response.json()["id"])
                time.sleep(0.5)
                for sid in ids:
                    assert client.delete(f"/streams/{sid}").status_code == 204
                rounds += 1
        return rounds

    def settled(threads: int) -> Callable[[], object]:
        def check() -> object:
            with server.client() as client:
                if client.get("/streams").json()["total"]:
                    return None
            return (s := proc_stats(pid)).threads <= threads and s

        return check

    try:
        initial = proc_stats(pid).threads
        churn(3.0)  # warm-up: first allocations, decoder and thread-stack caches, the request thread pool
        before = wait_for(settled(initial + 2), 15, "warm-up streams to end")
        rounds = churn(CHURN_S)
        stopped = time.monotonic()
        # Removed readers end on their own, promptly, even those that were waiting to open their source.
        after = wait_for(settled(before.threads), 5, "churned streams' readers to end")
        report("readers_ended_within_s", time.monotonic() - stopped)
    finally:
        if camera is not None:
            camera.kill()
    report("sources_per_round", len(sources))
    report("rounds", rounds)
    report("streams_added_and_removed", rounds * len(sources))
    report("process_before", str(before))
    report("process_after", str(after))
    report("rss_growth_mb", after.rss_mb - before.rss_mb)
    assert rounds >= 5
    assert after.fds <= before.fds + 2
    assert after.threads <= before.threads
    assert after.rss_mb - before.rss_mb < 40


def test_connections_that_never_send_a_request_head_are_closed(tmp_path: Path, report) -> None:
    """Slow-loris clients (connect and stay silent, or send half a request head) hold no descriptor for long.

    uvicorn with the service's HTTP protocol (`service.http_protocol`) and a 4 s head deadline, on the real app."""
    port = free_port()
    launch = (
        "import functools, uvicorn\n"
        "from service.http_protocol import HeadTimeoutProtocol\n"
        f"uvicorn.run('service.app:create_app', factory=True, host='127.0.0.1', port={port}, "
        "http=functools.partial(HeadTimeoutProtocol, head_timeout_s=4.0), log_level='warning')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINEVAD_")}
    env.update(
        {
            "REFINEVAD_DATA_DIR": str(tmp_path / "data"),
            "REFINEVAD_API_KEYS": API_KEY,
            "REFINEVAD_DEVICE": "cpu",
        }
    )
    proc = subprocess.Popen([sys.executable, "-c", launch], cwd=REPO_ROOT, env=env)
    try:
        wait_for(lambda: _health_ok(port), 60, "the server to listen")
        pid = proc.pid
        before = _settled_stats(pid)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        partial = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for sock in partial:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        # Counted as soon as the server holds them, well inside the deadline: read after the slow client below
        # (1.5 s, more on a loaded machine), the first could already be closed.
        during = wait_for(
            lambda: (s := proc_stats(pid)).fds >= before.fds + 40 and s, 3, "the server to hold all 40"
        )
        # A client that is slow but finishes its head in time is served.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            for piece in (b"GET /health HTT", b"P/1.1\r\nHost: x\r\n", b"\r\n"):
                slow.sendall(piece)
                time.sleep(0.5)
            assert slow.recv(1024).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        for sock in silent + partial:
            sock.settimeout(10)
            assert sock.recv(1024) == b""  # closed by the server
            sock.close()
        closed_after = time.monotonic() - started
        after = wait_for(
            lambda: (s := proc_stats(pid)).fds <= before.fds + 1 and s, 5, "descriptors to be freed"
        )
        report("stalled_connections", len(silent) + len(partial))
        report("all_closed_within_s", closed_after)
        report("fds_before_during_after", f"{before.fds} / {during.fds} / {after.fds}")
        assert _health_ok(port)
    finally:
        proc.terminate()
        proc.wait(20)


def _settled_stats(pid: int, seconds: float = 1.0) -> ProcStats:
    """The reading with the fewest descriptors over a short spell: the health checks' own connections may still
    be closing on the server when it starts."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(proc_stats(pid))
        time.sleep(0.1)
    return min(samples, key=lambda s: s.fds)


def _health_ok(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
