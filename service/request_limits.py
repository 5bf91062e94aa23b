"""A size limit for request bodies other than video uploads (JSON, forms), enforced before the app reads them.

FastAPI reads a JSON body whole into memory before validating it, so without this a client could make the
process hold any amount of data. A declared Content-Length over the limit is refused at once, without reading a
byte; a body without one (chunked) is read only up to the limit, and a body that stalls (no byte for the idle
timeout) or is still arriving `max_duration_s` after its first byte (a slow drip) is cut off (408). Under `refinevad
serve` both are kept by the connection's `BodyClock`, so they hold while the event loop or this task is busy. Upload
routes (`POST /analyze`) stream to disk under their own, much larger limit and are not touched.

`UploadPace` holds the pace rules an upload body must keep (used by `service.uploads` and enforced at the
connection by `service.http_protocol.BodyClock`).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

DEFAULT_MAX_BODY_BYTES = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class UploadPace:
    """How fast an upload must arrive: some data every `idle_timeout_s`; on average at least
    `min_bytes_per_s` once `grace_s` have passed since its first body byte (0 = no minimum); and all of it within
    `max_duration_s` of that byte. Times in seconds."""

    idle_timeout_s: float = 30.0
    min_bytes_per_s: float = 16 * 1024
    grace_s: float = 30.0
    max_duration_s: float = 3600.0

    def next_limit(
        self, first_byte_at: float | None, last_byte_at: float, received: int
    ) -> tuple[float, str]:
        """When the body breaks a limit if nothing more arrives, and which: (monotonic time, "idle" | "slow" |
        "deadline"). `first_byte_at` None (no body byte yet): only the idle limit, counted from `last_byte_at`
        (the end of the request head)."""
        idle = (last_byte_at + self.idle_timeout_s, "idle")
        if first_byte_at is None:
            return idle
        # When the average rate would fall below the minimum.
        slow_after = (
            max(self.grace_s, received / self.min_bytes_per_s) if self.min_bytes_per_s > 0 else math.inf
        )
        return min(
            idle, (first_byte_at + slow_after, "slow"), (first_byte_at + self.max_duration_s, "deadline")
        )

    def violation(self, reason: str, elapsed_s: float, received: int) -> tuple[str, str]:
        """The 408 answer's (code, message) for a broken limit; `elapsed_s` since the first body byte."""
        if reason == "deadline":
            return "upload_deadline", f"the upload took longer than the limit of {self.max_duration_s:g} s"
        if reason == "slow":
            return (
                "upload_too_slow",
                f"the upload is too slow: {received} bytes in {elapsed_s:.0f} s, below the minimum of "
                f"{self.min_bytes_per_s:g} bytes/s",
            )
        return "upload_timeout", f"the upload stalled: no data for {self.idle_timeout_s:g} s"


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        exempt: frozenset[str] = frozenset(),
        idle_timeout_s: float = 30.0,
        exempt_suffixes: tuple[str, ...] = (),
        max_duration_s: float = 60.0,
    ) -> None:
        """`exempt` paths and paths ending in `exempt_suffixes` are upload routes with limits of their own."""
        self.app = app
        self.pace = UploadPace(
            idle_timeout_s=idle_timeout_s, min_bytes_per_s=0.0, grace_s=0.0, max_duration_s=max_duration_s
        )
        self.exempt_suffixes = exempt_suffixes
        self.max_bytes = max_bytes
        self.exempt = exempt
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or scope["path"] in self.exempt
            or scope["path"].endswith(self.exempt_suffixes)
        ):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        # Read the body here, up to the limit, and hand the app what was read.
        messages: list[Message] = []
        size = 0
        # Imported here: service.http_protocol imports this module for UploadPace.
        from service.http_protocol import body_clock

        clock = body_clock(scope)
        if clock is not None:
            clock.enforce(self.pace)  # wakes the receive below when a limit breaks
        started = time.monotonic()
        while True:
            try:
                # The body is read before any key is checked: a client that stops sending must not hold on.
                left = max(0.0, started + self.pace.max_duration_s - time.monotonic())
                message = await asyncio.wait_for(receive(), min(self.idle_timeout_s, left))
            except TimeoutError:
                # Which limit the wait stood for, not a re-read clock: asyncio fires timers up to its clock
                # resolution early, so "now - started" can fall a hair short of the deadline it ran out on.
                await self._timeout(
                    scope, receive, send, "deadline" if left < self.idle_timeout_s else "idle"
                )
                return
            if clock is not None and clock.broken is not None:
                await self._timeout(
                    scope, receive, send, "deadline" if clock.broken[0] == "upload_deadline" else "idle"
                )
                return
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _timeout(self, scope: Scope, receive: Receive, send: Send, reason: str) -> None:
        message = (
            f"the request body took longer than the limit of {self.pace.max_duration_s:g} s"
            if reason == "deadline"
            else f"the request body stalled: no data for {self.idle_timeout_s:g} s"
        )
        response = error_response(408, "request_timeout", message, headers={"Connection": "close"})
        await response(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"the request body exceeds the limit of {self.max_bytes // 1024} KiB for this endpoint",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
