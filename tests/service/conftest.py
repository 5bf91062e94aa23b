"""Fixtures for service tests: the real server (`refinevad serve` in a subprocess on a free port) and real footage."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest

from tests.footage import encode_ped2_clip, ped2_frame_files
from tests.postgres_server import PostgresServer, postgres_available

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`refinevad serve` as a child process; `start()` returns once `/ready` says the model is warm."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, api_key: str | None = API_KEY
    ) -> None:
        self.data_dir = data_dir
        self.api_key = api_key
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def start(self, timeout: float = 60.0, until: str = "/ready") -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFINEVAD_")}
        env.update(
            {
                "REFINEVAD_DATA_DIR": str(self.data_dir),
                "REFINEVAD_API_KEYS": self.api_key or "",
                "REFINEVAD_DEVICE": "cpu",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(until).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server not ready within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Graceful stop (SIGTERM), as a service manager would; True if the app shut down cleanly."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        # uvicorn re-raises the signal after a clean shutdown, so -SIGTERM is a normal exit.
        return code in (0, -signal.SIGTERM) and "service stopped" in self.log_tail()

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def upload_video(client: httpx.Client, path: Path, **params) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post("/analyze", params=params, files={"file": (path.name, handle, "video/mp4")})


def wait_final(client: httpx.Client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")


def wait_event_with_snapshot(client: httpx.Client, stream_id: str, timeout: float) -> dict:
    """The stream's newest event once it has a snapshot (its view, as `GET /events` lists it)."""
    deadline = time.monotonic() + timeout
    items: list[dict] = []
    while time.monotonic() < deadline:
        items = client.get("/events", params={"stream": stream_id}).json()["items"]
        if items and items[0]["snapshot_url"]:
            return items[0]
        time.sleep(0.2)
    raise AssertionError(f"stream {stream_id}: no event with a snapshot after {timeout}s: {items}")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message", "detail"}
    assert body["message"]
    if code is not None:
        assert body["error"] == code, body
    return body


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory for servers owned by one test; all are killed at its end."""
    servers: list[ServerProcess] = []

    def make(data_dir: Path | None = None, **kwargs) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One running server shared by a test module (1 MiB upload limit so size tests stay cheap)."""
    data = tmp_path_factory.mktemp("service") / "data"
    env = {
        "REFINEVAD_MAX_UPLOAD_MB": "1",
        "REFINEVAD_SYNC_MAX_SECONDS": "10",
        # Every snippet is above threshold 0, so each analysed video yields exactly one event.
        "REFINEVAD_EVENT_THRESHOLD": "0",
    }
    proc = ServerProcess(data, env=env)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real Ped2 footage as mp4: `short` (8 s, under the sync limit), `clip` (18 s, the whole of test clip 01)."""
    root = tmp_path_factory.mktemp("footage")
    return {
        "short": encode_ped2_clip(root / "short.mp4", clip="testing/frames/02", max_frames=80),
        "clip": encode_ped2_clip(root / "clip01.mp4"),
    }


def encode_looped_clip(dest: Path, repeats: int, clip: str = "testing/frames/01", fps: float = 10.0) -> Path:
    """A long real video: one Ped2 clip played `repeats` times back to back (for jobs that must run a while)."""
    frames = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in ped2_frame_files(clip)]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for _ in range(repeats):
            for frame in frames:
                writer.write(frame)
    finally:
        writer.release()
    return dest


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (Debian's `postgresql`, loopback only); tests that use it get
    a database of their own through `postgres_url`."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (Debian package `postgresql`, see .ci/setup)")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())[:50]
    return postgres.create_database(f"{name}_{os.getpid()}_{time.monotonic_ns() % 10**9}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """What `Database` opens, once per backend: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "db" / "test.sqlite3"
    return request.getfixturevalue("postgres_url")
