"""The real service in a subprocess (`refinevad serve` on a free port) for tests that talk to it over a socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.rtsp_server import free_port

REPO = Path(__file__).resolve().parents[3]
API_KEY = "live-test-key"


class ServiceProcess:
    def __init__(self, data_dir: Path, log_path: Path, **settings: object) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.settings = settings
        self._proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": API_KEY}, timeout=10.0)

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        env = dict(os.environ)
        env.update(
            {
                "REFINEVAD_DATA_DIR": str(self.data_dir),
                "REFINEVAD_API_KEYS": API_KEY,
                "REFINEVAD_DEVICE": "cpu",
                "REFINEVAD_ALLOWED_SCHEMES": "rtsp,file",
                # The test cameras run on loopback, which the service refuses unless allowed.
                "REFINEVAD_ALLOWED_HOSTS": "127.0.0.1",
                "REFINEVAD_LIVE_RECONNECT_INITIAL_S": "0.3",
                "REFINEVAD_LIVE_RECONNECT_MAX_S": "1.5",
                "REFINEVAD_LIVE_OPEN_TIMEOUT_S": "3",
                "REFINEVAD_LIVE_READ_TIMEOUT_S": "3",
                # The service's own default probe (0.5 s) with TCP (FFmpeg's default probe takes ~3 s per
                # camera); a test can pass `live_ffmpeg_options` of its own.
                "REFINEVAD_LIVE_FFMPEG_OPTIONS": "rtsp_transport;tcp|analyzeduration;500000",
            }
        )
        env.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)  # it would override the setting
        env.update({f"REFINEVAD_{k.upper()}": str(v) for k, v in self.settings.items()})
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"service exited at start; log:\n{self.log_path.read_text()[-3000:]}")
                try:
                    if client.get("/ready").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"service not ready in {timeout}s; log:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def next_snippets(ws, count: int, timeout: float, status: str | None = None) -> list[dict]:
    """The next `count` snippet messages of a live WebSocket (of `status` if given); state messages and notices
    are skipped."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {len(out)} of {count} snippet messages within {timeout}s")
        message = json.loads(ws.recv(timeout=remaining))
        if message["type"] == "snippet" and (status is None or message["status"] == status):
            out.append(message)
    return out
