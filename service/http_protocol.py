"""uvicorn's HTTP protocol with a deadline on request heads.

uvicorn times out idle keep-alive connections only after a first response: a client that connects and sends
nothing, or half a request line and some headers, holds its connection (and a file descriptor) forever, before any
API key is checked. Enough such clients exhaust the process's descriptors. Here a request head (request line and
headers) must be complete within `head_timeout_s` of the connection opening or of its first byte; otherwise the
connection is closed. Bodies are not covered (uploads have their own idle timeout, JSON bodies a size limit).

Use: `uvicorn.run(app, http=functools.partial(HeadTimeoutProtocol, head_timeout_s=10))`, or the import string
`"service.http_protocol:HeadTimeoutProtocol"` for the default deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEAD_TIMEOUT_S = 10.0


class HeadTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)
