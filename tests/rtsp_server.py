"""A real RTSP server for tests: GStreamer's RTSP server (Debian's gstreamer1.0-rtsp + python3-gi) serving a folder
of Ped2 frames as H.264, looped forever at a fixed frame rate, optionally behind basic auth.

Two roles in one file:
- run as a script with the SYSTEM python3 (which has the GObject bindings; the project's venv does not):
  `/usr/bin/python3 tests/rtsp_server.py --port 8554 --frames ../shared/data/ped2/testing/frames/01`;
- imported by tests: `RtspServerProcess` starts that script as a subprocess on a free port, waits until it
  accepts connections, and can kill and restart it (a camera dropping off the network and coming back).

Only the standard library is imported at module level, so both interpreters can load it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
# The shared data beside the checkout (or $REFINEVAD_SHARED_DATA); this script runs on the system Python.
DEFAULT_FRAMES = (
    Path(os.environ.get("REFINEVAD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    / "ped2/testing/frames/01"
)
MOUNT = "/cam"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gstreamer_available() -> bool:
    """True when the system python3 can load GStreamer's RTSP server bindings."""
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0


def _pipeline(frames: Path, fps: int) -> str:
    # multifilesrc loops the numbered JPEGs forever; the RTSP server's sinks play it out at the clock rate, so the
    # client receives `fps` frames per second like a camera. Short GOPs let a reconnecting client start quickly.
    pattern = frames / "%03d.jpg"
    return (
        f'( multifilesrc location="{pattern}" index=0 loop=true caps="image/jpeg,framerate={fps}/1" '
        "! jpegdec ! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bframes=0 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def serve(port: int, frames: Path, fps: int, user: str | None, password: str | None) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_pipeline(frames, fps))
    # One pipeline for all clients, as a camera has.
    factory.set_shared(True)
    if user is not None and password is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(
            Gst.Structure.new_from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )
        )
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on port {port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    sys.stderr.write(f"rtsp server ready on rtsp://127.0.0.1:{port}{MOUNT}\n")
    sys.stderr.flush()
    loop.run()


class RtspServerProcess:
    """The server as a child process of the test; `url` stays the same across `kill()` and `start()`."""

    def __init__(
        self,
        frames: Path = DEFAULT_FRAMES,
        fps: int = 10,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.frames = frames
        self.fps = fps
        self.port = port or free_port()
        self.user = user
        self.password = password
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    def url_with_credentials(self) -> str:
        return f"rtsp://{self.user}:{self.password}@127.0.0.1:{self.port}{MOUNT}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> RtspServerProcess:
        command = [SYSTEM_PYTHON, __file__, "--port", str(self.port), "--frames", str(self.frames)]
        command += ["--fps", str(self.fps)]
        env = dict(os.environ)
        if self.user is not None and self.password is not None:
            # Through the environment, not argv: argv is visible to every process on the machine.
            env["RTSP_TEST_USER"], env["RTSP_TEST_PASSWORD"] = self.user, self.password
        self._proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"RTSP server exited at start with code {self._proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"RTSP server did not listen on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: the camera vanishes without a goodbye."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> RtspServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES, help="folder of 000.jpg, 001.jpg, ...")
    parser.add_argument("--fps", type=int, default=10)
    args = parser.parse_args()
    serve(
        args.port,
        args.frames,
        args.fps,
        os.environ.get("RTSP_TEST_USER"),
        os.environ.get("RTSP_TEST_PASSWORD"),
    )


if __name__ == "__main__":
    main()
