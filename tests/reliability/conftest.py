"""Shared pieces of the reliability suite: the `reliability` marker, a report of measured figures, process
statistics read from /proc, and hostile network peers (a port that never speaks, one that sends garbage).

The servers are the real service (`tests/service/conftest.ServerProcess`, `refinevad serve` in a subprocess);
every peer listens on loopback only and stops with its fixture.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Fixtures of the service suite, reused here (importing them into a conftest registers them).
from tests.service.conftest import ServerProcess, footage, make_server  # noqa: F401
from tests.service.live.service_process import next_snippets

logger = logging.getLogger("reliability")

# Live settings of the service under attack: fast reconnects, short timeouts, replay of local files allowed.
LIVE_ENV = {
    "REFINEVAD_ALLOWED_SCHEMES": "rtsp,http,file",
    "REFINEVAD_ALLOWED_HOSTS": "127.0.0.1",
    "REFINEVAD_LIVE_RECONNECT_INITIAL_S": "0.3",
    "REFINEVAD_LIVE_RECONNECT_MAX_S": "1.5",
    "REFINEVAD_LIVE_OPEN_TIMEOUT_S": "2",
    "REFINEVAD_LIVE_READ_TIMEOUT_S": "2",
    "OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;tcp",
}

_FIGURES: list[tuple[str, str, object]] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: attacks on the running service (faults, load, bad input, security)"
    )


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test, name, value in _FIGURES:
        terminalreporter.write_line(f"{test}: {name} = {value}")


@pytest.fixture
def report(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]):
    """`report(name, value)`: a measured figure, kept in the junit XML, the log and the end-of-run summary."""

    def record(name: str, value: object) -> None:
        if isinstance(value, float):
            value = round(value, 3)
        record_property(name, value)
        logger.info("%s: %s = %s", request.node.name, name, value)
        _FIGURES.append((request.node.name, name, value))

    return record


@dataclass(frozen=True)
class ProcStats:
    rss_mb: float
    fds: int
    threads: int
    peak_rss_mb: float = 0.0

    def __str__(self) -> str:
        return f"RSS {self.rss_mb:.0f} MB, {self.fds} FDs, {self.threads} threads"


def proc_stats(pid: int) -> ProcStats:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in status if ":" in line}
    return ProcStats(
        rss_mb=int(fields["VmRSS"][0]) / 1024,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(fields["Threads"][0]),
        peak_rss_mb=int(fields["VmHWM"][0]) / 1024,
    )


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class HostilePeer:
    """A TCP server on loopback that accepts connections and then either never speaks or sends random bytes."""

    def __init__(self, mode: str) -> None:
        assert mode in ("silent", "garbage")
        self.mode = mode
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name=f"{mode}-peer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._conns.append(conn)
            if self.mode == "garbage":
                threading.Thread(target=self._spew, args=(conn,), daemon=True).start()

    def _spew(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(1.0)
            while not self._stop.is_set():
                conn.sendall(os.urandom(4096))
                time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture
def hostile_peers() -> Iterator[Callable[[str], HostilePeer]]:
    peers: list[HostilePeer] = []

    def make(mode: str) -> HostilePeer:
        peers.append(HostilePeer(mode))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


class Cadence:
    """Arrival times of a stream's provisional snippets, collected by a background WebSocket client."""

    def __init__(self, service: ServerProcess, stream_id: str) -> None:
        self._exit = contextlib.ExitStack()
        self._ws = self._exit.enter_context(open_live(service, stream_id))
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                next_snippets(self._ws, 1, timeout=1.0, status="provisional")
            except (AssertionError, TimeoutError):
                continue
            except Exception:
                return
            self.arrivals.append(time.monotonic())

    def max_gap_s(self) -> float:
        return max(b - a for a, b in itertools.pairwise(self.arrivals))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._exit.close()


def server_pid(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def open_live(server: ServerProcess, stream_id: str, since: int | None = None):
    from websockets.sync.client import connect

    query = f"?since={since}" if since is not None else ""
    ws_url = server.url.replace("http://", "ws://")
    return connect(
        f"{ws_url}/streams/{stream_id}/live{query}", additional_headers=server.headers, open_timeout=10
    )


def stream_view(server: ServerProcess, stream_id: str) -> dict:
    with server.client(timeout=10) as client:
        return client.get(f"/streams/{stream_id}").json()
