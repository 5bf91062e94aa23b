"""uvicorn's HTTP protocol with a deadline on request heads and a pace watch on request bodies.

uvicorn times out idle keep-alive connections only after a first response: a client that connects and sends
nothing, or half a request line and some headers, holds its connection (and a file descriptor) forever, before any
API key is checked. Enough such clients exhaust the process's descriptors. Here a request head (request line and
headers) must be complete within `head_timeout_s` of the connection opening or of its first byte; otherwise the
connection is closed.

Bodies: every request gets a `BodyClock` (in `scope["extensions"][BODY_CLOCK]`) that counts its body bytes as the
connection receives them, whether or not the app has started reading, and whatever the app's parser is doing
with them (multipart part headers included). An app that calls `clock.enforce(pace)` (uploads do) has the
`UploadPace` limits kept by a timer of this connection, from the body's first byte: when one breaks, `broken`
is set and the app's pending `receive` returns, so that the app can clean up and answer 408; if it has not
started an answer 1 s later, the connection answers 408 itself and closes (the app's `receive` then returns
`http.disconnect` and its sends are dropped). The limits so hold
while the request's task waits for something else (a dependency, the thread pool, a slow handler) and however
the app's own waits are arranged. A watchdog thread backs the timer up for when the event loop itself is blocked:
a limit left broken for 2 s is enforced from there by shutting the socket down (bytes waiting in the kernel count
as received). (A pipelined request queued behind another is not read until its turn; its clock starts when its
bytes are read.) JSON bodies are limited by
`service.request_limits.BodyLimitMiddleware`.

Use: `uvicorn.run(app, http=functools.partial(HeadTimeoutProtocol, head_timeout_s=10))`, or the import string
`"service.http_protocol:HeadTimeoutProtocol"` for the default deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import socket
import sys
import termios
import threading
import time
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from service.request_limits import UploadPace

DEFAULT_HEAD_TIMEOUT_S = 10.0
# The ASGI scope extension that carries a request's BodyClock.
BODY_CLOCK = "refinevad.body_clock"
# While the server itself is not reading (flow control: the app is behind, or a pipelined request waits its turn),
# the idle and rate limits are not the client's to break; they are looked at again this often.
_PAUSED_RECHECK_S = 1.0
# After a limit breaks, the app has this long to answer the 408 itself before the connection does.
_APP_ANSWER_S = 1.0
# The watchdog thread looks this often, and acts on a limit the event loop has left broken for this long.
_WATCHDOG_INTERVAL_S = 0.5
_WATCHDOG_SLACK_S = 2.0

logger = logging.getLogger(__name__)


class BodyClock:
    """One request body as its connection receives it: bytes so far, when the first and the latest arrived
    (monotonic seconds), and, once `enforce` is called, the pace it must keep.

    `broken` is None until the connection cut the request for breaking the pace, then (code, message) of the
    408 it answered (or, when the event loop was too busy to answer, of the close)."""

    def __init__(self, protocol: HeadTimeoutProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self.head_done_at = time.monotonic()
        self.first_byte_at: float | None = None
        self.last_byte_at = self.head_done_at
        self.received = 0
        self.complete = False
        self.pace: UploadPace | None = None
        self.broken: tuple[str, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # A duplicate of the connection's socket for the watchdog thread, and the lock it is used under.
        self._sock: socket.socket | None = None
        self._unread_since: float | None = None
        self._lock = threading.Lock()

    def enforce(self, pace: UploadPace) -> None:
        """Keep `pace` from the body's first byte (bytes that came before this call count from when they came);
        a limit already broken cuts the request at once."""
        self.pace = pace
        if self.first_byte_at is None:
            # Nothing read yet (e.g. a pipelined request the server had not started reading): the idle limit
            # counts from now, not from a wait that was the server's.
            self.last_byte_at = time.monotonic()
        self._stop_timer()
        raw = self._protocol.transport.get_extra_info("socket")
        if self._sock is None and raw is not None and not self.complete:
            with contextlib.suppress(OSError):
                self._sock = raw.dup()
                _WATCHDOG.add(self)
        self._check()

    def on_body(self, size: int) -> None:
        now = time.monotonic()
        if self.first_byte_at is None:
            self.first_byte_at = now
        self.last_byte_at = now
        self.received += size

    def on_complete(self) -> None:
        self.complete = True
        self.cancel()

    def cancel(self) -> None:
        """Stop watching (the body is complete or the connection is gone)."""
        self._stop_timer()
        _WATCHDOG.discard(self)
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _watched(self) -> bool:
        cycle = self._cycle
        return not (
            self.pace is None or self.complete or self.broken or cycle.response_started or cycle.disconnected
        )

    def _first_byte(self) -> float | None:
        return self.first_byte_at if self.first_byte_at is not None else self._unread_since

    def _next_limit(self, now: float, unread: int = 0) -> tuple[float, str]:
        """When the nearest limit breaks, and which; `unread`: bytes waiting in the kernel, not yet read."""
        assert self.pace is not None
        first = self._first_byte()
        if self._protocol.flow.read_paused:
            # The server is the one not reading: only the total deadline counts meanwhile.
            at, reason = now + _PAUSED_RECHECK_S, "paused"
            if first is not None and first + self.pace.max_duration_s < at:
                at, reason = first + self.pace.max_duration_s, "deadline"
            return at, reason
        last = now if unread else self.last_byte_at
        return self.pace.next_limit(first, last, self.received + unread)

    def _violation(self, now: float, reason: str, received: int) -> tuple[str, str]:
        assert self.pace is not None
        first = self._first_byte()
        elapsed = now - (first if first is not None else self.head_done_at)
        return self.pace.violation(reason, elapsed, received)

    def _check(self) -> None:
        """On the event loop: cut the request if a limit is broken, else look again when the nearest is due."""
        self._timer = None
        if not self._watched():
            return
        now = time.monotonic()
        at, reason = self._next_limit(now)
        if self._protocol.flow.read_paused:
            self.last_byte_at = now
        if at > now:
            # Bytes arriving meanwhile move the limits on.
            self._timer = self._protocol.loop.call_later(at - now, self._check)
            return
        with self._lock:
            if self.broken:
                return
            self.broken = self._violation(now, reason, self.received)
        self.cancel()
        # The app's pending `receive` returns now; an app that checks `broken` answers the 408 itself, after
        # its own clean-up. One that does not (busy elsewhere, not reading) is answered by the connection.
        self._cycle.message_event.set()
        self._protocol.loop.call_later(_APP_ANSWER_S, self._answer_for_app)

    def _answer_for_app(self) -> None:
        assert self.broken is not None
        self._protocol.cut_request(self._cycle, 408, *self.broken)

    def watchdog_check(self, now: float) -> bool:
        """From the watchdog thread: when a limit has been broken for `_WATCHDOG_SLACK_S` and the event loop has
        not cut the request (it is busy or blocked), shut the connection's socket down from here; bytes still
        in the kernel count as received, and as activity. True when this clock needs no more watching."""
        with self._lock:
            if self._sock is None or not self._watched():
                return True
            try:
                unread = _unread_bytes(self._sock)
                if unread and self._unread_since is None:
                    # The loop has read no body byte yet: the body is taken to begin when this first saw one.
                    self._unread_since = now
                at, reason = self._next_limit(now, unread)
                if at + _WATCHDOG_SLACK_S > now:
                    return False
                self.broken = self._violation(now, reason, self.received + unread)
                # shutdown, not close: the event loop still owns the descriptor; it sees the end of the stream
                # when it runs again, and the app's receive returns http.disconnect.
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                return True
        logger.warning(
            "%s %s: %s; the event loop did not answer within %gs, so the connection was shut down",
            self._cycle.scope["method"],
            self._cycle.scope["path"],
            self.broken[1],
            _WATCHDOG_SLACK_S,
        )
        return True


def _unread_bytes(sock: socket.socket) -> int:
    """Bytes the kernel holds for `sock` that nobody has read yet (0 where the platform cannot say)."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int.from_bytes(buf, sys.byteorder, signed=True)


class _Watchdog:
    """One daemon thread per process that looks at every enforced BodyClock twice a second, so that a pace
    holds even while the event loop is blocked (it needs only the GIL, which blocking calls release)."""

    def __init__(self) -> None:
        self._clocks: set[BodyClock] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once per process)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="upload-pace-watchdog", daemon=True)
                self._thread.start()

    def add(self, clock: BodyClock) -> None:
        self.start()
        with self._lock:
            self._clocks.add(clock)

    def discard(self, clock: BodyClock) -> None:
        with self._lock:
            self._clocks.discard(clock)

    def _run(self) -> None:
        while True:
            time.sleep(_WATCHDOG_INTERVAL_S)
            with self._lock:
                clocks = list(self._clocks)
            now = time.monotonic()
            for clock in clocks:
                if clock.watchdog_check(now):
                    self.discard(clock)


_WATCHDOG = _Watchdog()


def body_clock(scope: Mapping[str, Any]) -> BodyClock | None:
    """The request's BodyClock when it is served by `HeadTimeoutProtocol`, else None."""
    clock = scope.get("extensions", {}).get(BODY_CLOCK)
    return clock if isinstance(clock, BodyClock) else None


class HeadTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # With the first connection, not the first paced body (every JSON body is): the process's thread count
        # stays flat while it serves.
        _WATCHDOG.start()
        self.head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        # The clock of the request whose body is being parsed now.
        self._body_clock: BodyClock | None = None

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.logger.info(
                "closing a connection whose request head did not arrive in %gs", self.head_timeout_s
            )
            self.transport.close()

    def cut_request(self, cycle: RequestResponseCycle, status: int, code: str, message: str) -> None:
        """Answer `cycle`'s request with a JSON error (the API's error shape) and close the connection; the app's
        later sends are dropped and its `receive` returns `http.disconnect`. Does nothing once its response has
        started."""
        if cycle.response_started or cycle.disconnected or self.transport.is_closing():
            return
        body = json.dumps({"error": code, "message": message, "detail": None}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        cycle.response_started = True
        cycle.keep_alive = False
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        self.logger.info(
            '%s:%s - "%s %s" %d cut by the connection: %s',
            *(self.client or ("-", "-")),
            cycle.scope["method"],
            cycle.scope["path"],
            status,
            message,
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        scope = self.scope
        super().on_headers_complete()
        # The new request's task is created but has not run yet: its scope gets the clock before the app sees it.
        if self.cycle is not None and self.cycle.scope is scope:
            self._body_clock = BodyClock(self, self.cycle)
            scope.setdefault("extensions", {})[BODY_CLOCK] = self._body_clock  # type: ignore[typeddict-item]

    def on_body(self, body: bytes) -> None:
        if self._body_clock is not None:
            self._body_clock.on_body(len(body))
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_clock is not None:
            self._body_clock.on_complete()
            self._body_clock = None
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        if self._body_clock is not None:
            self._body_clock.cancel()
            self._body_clock = None
        super().connection_lost(exc)
