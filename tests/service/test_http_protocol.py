"""The connection keeps an upload's pace (`service.http_protocol.BodyClock`), over real sockets to a real uvicorn
server on 127.0.0.1 running `HeadTimeoutProtocol` with a small ASGI app: the limits hold while the request's task
is busy elsewhere and never reads, and (through the watchdog thread) while the event loop itself is blocked; a
client that keeps the pace is served in full."""

from __future__ import annotations

import asyncio
import functools
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from service.http_protocol import HeadTimeoutProtocol, body_clock
from service.request_limits import UploadPace
from tests.service.conftest import free_port

pytestmark = pytest.mark.integration

# Some data every 2 s, 1000 bytes/s on average after 2 s, all within 6 s.
PACE = UploadPace(idle_timeout_s=2.0, min_bytes_per_s=1000.0, grace_s=2.0, max_duration_s=6.0)
HOLD_S = 8.0  # how long the busy handlers keep away from the body


async def pace_app(scope, receive, send) -> None:
    """/read: keep PACE and read the body, answer its size (or, woken by a broken limit, 408 with its code). /busy: keep PACE, then await something else for
    HOLD_S before reading. /block: keep PACE, then block the event loop for HOLD_S (a blocking call)."""
    if scope["type"] != "http":
        return
    clock = body_clock(scope)
    assert clock is not None
    clock.enforce(PACE)
    if scope["path"] == "/busy":
        await asyncio.sleep(HOLD_S)
    elif scope["path"] == "/block":
        time.sleep(HOLD_S)
    size = 0
    while True:
        message = await receive()
        if clock.broken is not None:
            # The connection woke this receive: answer the 408 here (as the service's uploads do).
            await answer(send, 408, clock.broken[0].encode())
            return
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await answer(send, 200, str(size).encode())


async def answer(send, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"connection", b"close"), (b"x-by", b"app")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        pace_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        http=functools.partial(HeadTimeoutProtocol, head_timeout_s=5.0),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(HOLD_S + 10)


def drip(
    port: int, path: str, piece: bytes, every_s: float, declared: int = 1_000_000
) -> tuple[bytes, float]:
    """Send a head, then `piece` every `every_s` until the server answers or closes (30 s at most); returns what
    it answered (b"" for a close without an answer) and the seconds since the head."""
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {declared}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 30 and sent < declared:
            if select.select([sock], [], [], every_s)[0]:
                break
            try:
                sock.sendall(piece)
            except OSError:
                break
            sent += len(piece)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:
            pass
        return reply, time.monotonic() - started


def test_a_drip_is_answered_by_the_reading_app_at_the_limit(port: int) -> None:
    """The app waits on `receive`; the connection wakes it when the 2 s grace period is over, and the app
    answers."""
    reply, seconds = drip(port, "/read", b"x", 0.5)
    assert reply.startswith(b"HTTP/1.1 408") and b"x-by: app" in reply, reply[:200]
    assert reply.endswith(b"upload_too_slow")
    assert 1.8 <= seconds < 3.0, seconds


def test_a_drip_is_cut_while_the_handler_never_reads(port: int) -> None:
    """The handler is busy elsewhere for 8 s: the connection answers 408 itself, 1 s after the 2 s grace
    period."""
    reply, seconds = drip(port, "/busy", b"x", 0.5)
    assert reply.startswith(b"HTTP/1.1 408") and b"x-by" not in reply, reply[:200]
    assert b'"error": "upload_too_slow"' in reply and b"connection: close" in reply.lower()
    assert 2.8 <= seconds < 5.0, seconds


def test_a_silent_body_is_cut_at_the_idle_limit(port: int) -> None:
    reply, seconds = drip(port, "/read", b"", 10.0)
    assert reply.startswith(b"HTTP/1.1 408") and reply.endswith(b"upload_timeout"), reply[:200]
    assert 1.8 <= seconds < 3.0, seconds


def test_an_endless_upload_at_a_good_rate_is_cut_at_the_deadline(port: int) -> None:
    reply, seconds = drip(port, "/read", b"x" * 1000, 0.25, declared=10_000_000)
    assert reply.startswith(b"HTTP/1.1 408") and reply.endswith(b"upload_deadline"), reply[:200]
    assert 5.8 <= seconds < 8.0, seconds


def test_a_drip_is_cut_while_the_event_loop_is_blocked(port: int) -> None:
    """The event loop is blocked for 8 s: the watchdog thread shuts the connection down 2 s after the limit
    broke (no answer: the loop that would write it is blocked)."""
    reply, seconds = drip(port, "/block", b"x", 0.5)
    assert reply == b"", reply[:200]
    assert 3.8 <= seconds < 6.0, seconds


def test_an_upload_that_keeps_the_pace_is_read_in_full(port: int) -> None:
    """5000 bytes/s for 3 s (over the 2 s grace period), then the answer: nothing lost."""
    reply, seconds = drip(port, "/read", b"x" * 1000, 0.2, declared=15_000)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert reply.endswith(b"\r\n\r\n15000")
    assert seconds < 5.0
