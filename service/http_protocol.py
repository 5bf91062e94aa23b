"""uvicorn's HTTP protocol with a deadline on request heads and a pace watch on request bodies.

uvicorn times out idle keep-alive connections only after a first response: a client that connects and sends
nothing, or half a request line and some headers, holds its connection (and a file descriptor) forever, before any
API key is checked. Enough such clients exhaust the process's descriptors. Here a request head (request line and
headers) must be complete within `head_timeout_s` of the connection opening or of its first byte; otherwise the
connection is closed.

Bodies: every request gets a `BodyClock` (in `scope["extensions"][BODY_CLOCK]`) that counts its body bytes as the
connection receives them, whether or not the app has started reading, and whatever the app's parser is doing
with them (multipart part headers included). An app that calls `clock.enforce(pace)` (uploads do) has the
`UploadPace` limits kept by a timer of this connection, from the body's first byte: when one breaks, the
connection answers 408 itself and closes, and the app's `receive` returns `http.disconnect`. The limits so hold
while the request's task waits for something else (a dependency, the thread pool, a slow handler) and however
the app's own waits are arranged. (A pipelined request queued behind another is not read until its turn; its
clock starts when its bytes are read.) JSON bodies are limited by
`service.request_limits.BodyLimitMiddleware`.

Use: `uvicorn.run(app, http=functools.partial(HeadTimeoutProtocol, head_timeout_s=10))`, or the import string
`"service.http_protocol:HeadTimeoutProtocol"` for the default deadline.
"""

from __future__ import annotations

import asyncio
import json
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


class BodyClock:
    """One request body as its connection receives it: bytes so far, when the first and the latest arrived
    (monotonic seconds), and, once `enforce` is called, the pace it must keep.

    `broken` is None until the connection cut the request for breaking the pace, then (code, message) of the
    408 it answered."""

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

    def enforce(self, pace: UploadPace) -> None:
        """Keep `pace` from the body's first byte (bytes that came before this call count from when they came);
        a limit already broken cuts the request at once."""
        self.pace = pace
        if self.first_byte_at is None:
            # Nothing read yet (e.g. a pipelined request the server had not started reading): the idle limit
            # counts from now, not from a wait that was the server's.
            self.last_byte_at = time.monotonic()
        self.cancel()
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        cycle = self._cycle
        pace = self.pace
        if pace is None or self.complete or self.broken or cycle.response_started or cycle.disconnected:
            return
        now = time.monotonic()
        if self._protocol.flow.read_paused:
            # The server is the one not reading: only the total deadline counts meanwhile.
            self.last_byte_at = now
            at, reason = now + _PAUSED_RECHECK_S, "paused"
            if self.first_byte_at is not None and self.first_byte_at + pace.max_duration_s < at:
                at, reason = self.first_byte_at + pace.max_duration_s, "deadline"
        else:
            at, reason = pace.next_limit(self.first_byte_at, self.last_byte_at, self.received)
        if at > now:
            # Bytes arriving meanwhile move the limits on; this looks again when the nearest one is due.
            self._timer = self._protocol.loop.call_later(at - now, self._check)
            return
        elapsed = now - (self.first_byte_at if self.first_byte_at is not None else self.head_done_at)
        self.broken = pace.violation(reason, elapsed, self.received)
        self._protocol.cut_request(cycle, 408, *self.broken)


def body_clock(scope: Mapping[str, Any]) -> BodyClock | None:
    """The request's BodyClock when it is served by `HeadTimeoutProtocol`, else None."""
    clock = scope.get("extensions", {}).get(BODY_CLOCK)
    return clock if isinstance(clock, BodyClock) else None


class HeadTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
