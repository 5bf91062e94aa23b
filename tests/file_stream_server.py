"""A network camera made of a recorded stream file (e.g. an MPEG-TS capture): each GET sends the file's bytes from
`start_offset` on, at the pace that plays the whole file in `duration_s` seconds, as a camera's HTTP stream port
would, then closes the connection (a client joining mid-stream: `start_offset` is rounded down to a whole
188-byte MPEG-TS packet).
HEAD answers with the headers only (the service's reachability check). Listens on 127.0.0.1 only; standard library.
"""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 188 * 64  # whole MPEG-TS packets


class FileStreamServer:
    def __init__(
        self, path: Path, duration_s: float, start_offset: int = 0, content_type: str = "video/mp2t"
    ) -> None:
        whole = path.read_bytes()
        self.rate = len(whole) / duration_s  # bytes per second
        self.data = whole[start_offset // 188 * 188 :]
        self.name = path.name
        self.requests = 0
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                server.requests += 1
                self._headers()

            def do_GET(self) -> None:
                server.requests += 1
                self._headers()
                with contextlib.suppress(OSError):
                    server._stream(self.wfile)

            def _headers(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Cache-Control", "no-store")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="file-stream", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}/{self.name}"

    def _stream(self, out) -> None:
        started = time.monotonic()
        for offset in range(0, len(self.data), CHUNK):
            if self._closing.is_set():
                return
            out.write(self.data[offset : offset + CHUNK])
            out.flush()
            due = started + (offset + CHUNK) / self.rate
            self._closing.wait(max(0.0, due - time.monotonic()))

    def start(self) -> FileStreamServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FileStreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
