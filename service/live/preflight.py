"""A quick check that a camera answers at all, done before OpenCV is asked to open it.

OpenCV's FFmpeg backend opens every capture under one process-wide lock, network handshake included. A camera
host that is down (no answer to the TCP handshake), or a port that accepts and never speaks, would hold that lock
for the whole open timeout and delay every other stream's connection and reconnection behind it. This check runs
outside the lock: it connects to the host and, for RTSP and HTTP, sends one request (RTSP `OPTIONS`, HTTP `HEAD`)
and wants a status line of that protocol back. Any status counts (401 included): the point is only that something
speaking the protocol is there. TLS schemes (rtsps, https) get the TCP check only.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_STATUS_PREFIX = {"rtsp": b"RTSP/1.", "http": b"HTTP/1."}
_MAX_STATUS_LINE = 512


class SourceUnreachable(ConnectionError):
    """The source's host refused, did not answer, or answered in a protocol other than the URL's."""


def check_reachable(url: str, timeout_s: float) -> None:
    """Raise `SourceUnreachable` (with a message free of credentials) unless the source answers in time."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in DEFAULT_PORTS or not host:
        return  # other schemes are left to the decoder
    port = parts.port or DEFAULT_PORTS[scheme]
    where = f"{host}:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise SourceUnreachable(f"cannot connect to {where}: {exc.strerror or exc}") from None
    with sock:
        prefix = _STATUS_PREFIX.get(scheme)
        if prefix is None:
            return
        path = parts.path or "/"
        # The request names the path only: the URL's credentials never go out in clear here.
        if scheme == "rtsp":
            request = f"OPTIONS rtsp://{where}{path} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: refinevad\r\n\r\n"
        else:
            request = f"HEAD {path} HTTP/1.0\r\nHost: {where}\r\nUser-Agent: refinevad\r\n\r\n"
        received = b""
        try:
            sock.sendall(request.encode("ascii", "replace"))
            while b"\n" not in received and len(received) < _MAX_STATUS_LINE:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(_MAX_STATUS_LINE)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            raise SourceUnreachable(
                f"{where} accepted the connection but sent no {scheme.upper()} answer within {timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise SourceUnreachable(f"connection to {where} failed: {exc.strerror or exc}") from None
        if not received.startswith(prefix):
            what = "closed the connection" if not received else "did not answer"
            raise SourceUnreachable(f"{where} {what} like an {scheme.upper()} server")
