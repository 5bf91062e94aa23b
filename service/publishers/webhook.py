"""The webhook publisher: live event notices POSTed as JSON to one configured URL."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Any

import httpx

from service.live.urls import mask_url
from service.publishers.base import EventChanged, Outgoing, Publisher

logger = logging.getLogger(__name__)


class WebhookPublisher(Publisher):
    """POSTs event start and end notices to one URL from its own thread, retrying failures with capped exponential
    backoff. Payload: `{"type": "event.start" | "event.end", "stream_id", "stream_name", "event": {...}}`.

    The queue is bounded: when the receiver is down for long, the oldest undelivered notices are dropped (logged).
    """

    name = "webhook"

    def __init__(
        self, url: str, attempts: int = 5, initial_delay_s: float = 0.5, max_delay_s: float = 30.0
    ) -> None:
        self.url = url
        self.display_url = mask_url(url)
        self.attempts = attempts
        self.initial_delay_s = initial_delay_s
        self.max_delay_s = max_delay_s
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout_s)

    def publish(self, message: Outgoing) -> None:
        # Peak updates stay off the webhook: receivers get one start and one end per event.
        if isinstance(message, EventChanged) and message.notice.type in ("start", "end"):
            self.send(
                {
                    "type": f"event.{message.notice.type}",
                    "stream_id": message.stream_id,
                    "stream_name": message.stream_name,
                    "event": message.notice.model_dump(mode="json"),
                }
            )

    def send(self, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            try:
                dropped = self._queue.get_nowait()
                logger.warning(
                    "webhook queue full; dropping the oldest notice %s", (dropped or {}).get("type")
                )
            except queue.Empty:
                pass
            self._queue.put_nowait(payload)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                payload = self._queue.get()
                if payload is None:
                    break
                self._deliver(client, payload)

    def _deliver(self, client: httpx.Client, payload: dict[str, Any]) -> None:
        for attempt in range(self.attempts):
            try:
                response = client.post(self.url, json=payload)
                if 200 <= response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            delay = min(self.max_delay_s, self.initial_delay_s * 2**attempt)
            logger.warning(
                "webhook %s: %s (attempt %d/%d)%s",
                self.display_url,
                problem,
                attempt + 1,
                self.attempts,
                f", retrying in {delay:.1f}s" if attempt + 1 < self.attempts else "",
            )
            if attempt + 1 < self.attempts and self._stop.wait(delay):
                break
        self.failed += 1
        logger.error("webhook %s: giving up on a %s notice", self.display_url, payload.get("type"))
