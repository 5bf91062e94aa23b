"""A real MJPEG-over-HTTP camera for tests: Ped2's JPEG frames served as `multipart/x-mixed-replace` at a fixed
frame rate, the way cheap IP cameras and DVR web ports stream, with a switch that makes it go silent.

`silent()` freezes the camera: open connections stay open but receive nothing more, and new requests get their
response headers and then nothing (an encoder that hung while its web server lives on). `resume()` lets frames
flow again. Listens on 127.0.0.1 only; standard library only.
"""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.footage import ped2_frame_files

BOUNDARY = "refinevadframe"


class MjpegCamera:
    def __init__(self, clip: str = "testing/frames/01", fps: float = 10.0, port: int = 0) -> None:
        self.frames = [path.read_bytes() for path in ped2_frame_files(clip)]
        self.fps = fps
        self.requests = 0
        self._sending = threading.Event()
        self._sending.set()
        self._closing = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                camera.requests += 1
                self._headers()

            def do_GET(self) -> None:
                camera.requests += 1
                self._headers()
                with contextlib.suppress(OSError):
                    camera._stream(self.wfile)

            def _headers(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg-camera", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def _stream(self, out) -> None:
        period = 1.0 / self.fps
        due = time.monotonic()
        i = 0
        while not self._closing.is_set():
            if not self._sending.is_set():
                # Frozen: hold the connection, send nothing, and restart the clock once frames flow again.
                self._sending.wait(0.2)
                due = time.monotonic()
                continue
            jpeg = self.frames[i % len(self.frames)]
            part = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            out.write(part + jpeg + b"\r\n")
            out.flush()
            i += 1
            due += period
            time.sleep(max(0.0, due - time.monotonic()))

    def silent(self) -> None:
        self._sending.clear()

    def resume(self) -> None:
        self._sending.set()

    def start(self) -> MjpegCamera:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._sending.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> MjpegCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
