"""A size limit for request bodies other than video uploads (JSON, forms), enforced before the app reads them.

FastAPI reads a JSON body whole into memory before validating it, so without this a client could make the
process hold any amount of data. A declared Content-Length over the limit is refused at once, without reading a
byte; a body without one (chunked) is read only up to the limit, and a body that stalls is cut off (408). Upload routes (`POST /analyze`) stream to disk
under their own, much larger limit and are not touched.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

DEFAULT_MAX_BODY_BYTES = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        exempt: frozenset[str] = frozenset(),
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        # Read the body here, up to the limit, and hand the app what was read.
        messages: list[Message] = []
        size = 0
        while True:
            try:
                # The body is read before any key is checked: a client that stops sending must not hold on.
                message = await asyncio.wait_for(receive(), self.idle_timeout_s)
            except TimeoutError:
                response = error_response(
                    408,
                    "request_timeout",
                    f"the request body stalled: no data for {self.idle_timeout_s:g} s",
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
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

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"the request body exceeds the limit of {self.max_bytes // 1024} KiB for this endpoint",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
