"""Live events: a hysteresis detector per stream fed with final scores, stored in the database, announced to clients and
to an optional webhook.

An event is announced (stored, `start` notice, webhook) only once it has lasted `min_duration_s`, so a short blip
that the policy would discard never raises an alarm. Events share the `events` table with file analysis
(`source_kind = "stream"`, `source_id` = stream id); this module adds wall-clock start/end, a status column and
the reason each live event ended (`end_reason`, see `EndReason`).

An event never outlives its source's scores: when the stream stops (end of a replayed file, removal, shutdown),
stalls or loses its source, its open event is closed at once at its last scored high snippet, and a snippet that
follows a gap (frames dropped, an outage) longer than the policy's `min_gap_s` first closes the event it would
otherwise be bridged into. Events left open by a crash are marked `interrupted` at the next start-up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np
import sqlalchemy as sa

from model.events import Event, EventDetector, EventPolicy
from service.live.messages import EndReason, EventNotice
from service.live.urls import mask_url
from service.storage import EVENTS, Database, EventStore

logger = logging.getLogger(__name__)

SOURCE_KIND = "stream"
EventStatus = Literal["open", "closed", "interrupted"]


@dataclass(frozen=True, slots=True)
class EventFilter:
    source_kind: str | None = None
    source_id: str | None = None
    since: float | None = None  # wall clock, Unix seconds
    until: float | None = None
    category: str | None = None
    min_score: float | None = None
    status: str | None = None
    limit: int = 100
    offset: int = 0


class LiveEventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        EventStore(db)  # makes sure the shared events table exists, with its live columns

    def open(self, stream_id: str, start_s: float, started_at: float, peak: float) -> int:
        with self.db.transaction() as conn:
            cur = conn.execute(
                sa.insert(EVENTS).values(
                    source_kind=SOURCE_KIND,
                    source_id=stream_id,
                    start_s=start_s,
                    peak_score=peak,
                    categories_json="{}",
                    created_at=time.time(),
                    started_at=started_at,
                    status="open",
                )
            )
            return int(cur.inserted_primary_key[0])

    def close(
        self,
        event_id: int,
        *,
        end_s: float,
        ended_at: float,
        peak: float,
        mean: float,
        dominant: str | None,
        categories: dict[str, float],
        reason: EndReason,
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                sa.update(EVENTS)
                .where(EVENTS.c.id == event_id)
                .values(
                    end_s=end_s,
                    ended_at=ended_at,
                    peak_score=peak,
                    mean_score=mean,
                    dominant_category=dominant,
                    categories_json=json.dumps(categories),
                    status="closed",
                    end_reason=reason,
                )
            )

    def mark_interrupted(self, stream_ids: Sequence[str] | None = None) -> int:
        """Events a crash left open (of `stream_ids`, or of every stream); they keep their start, with no end,
        and `end_reason` service_interrupted."""
        where = [EVENTS.c.source_kind == SOURCE_KIND, EVENTS.c.status == "open"]
        if stream_ids is not None:
            where.append(EVENTS.c.source_id.in_(list(stream_ids)))
        with self.db.transaction() as conn:
            cur = conn.execute(
                sa.update(EVENTS)
                .where(*where)
                .values(status="interrupted", ended_at=time.time(), end_reason="service_interrupted")
            )
            return cur.rowcount

    def query(self, f: EventFilter) -> tuple[list[dict[str, Any]], int]:
        where = [
            column == value
            for column, value in (
                (EVENTS.c.source_kind, f.source_kind),
                (EVENTS.c.source_id, f.source_id),
                (EVENTS.c.status, f.status),
                (EVENTS.c.dominant_category, f.category),
            )
            if value is not None
        ]
        if f.min_score is not None:
            where.append(EVENTS.c.peak_score >= f.min_score)
        # File events have no wall-clock start; their creation time stands in.
        started = sa.func.coalesce(EVENTS.c.started_at, EVENTS.c.created_at)
        if f.since is not None:
            where.append(
                sa.func.coalesce(EVENTS.c.ended_at, EVENTS.c.started_at, EVENTS.c.created_at) >= f.since
            )
        if f.until is not None:
            where.append(started <= f.until)
        rows = self.db.query(
            sa.select(EVENTS)
            .where(*where)
            .order_by(started.desc(), EVENTS.c.id.desc())
            .limit(f.limit)
            .offset(f.offset)
        )
        total = self.db.query(sa.select(sa.func.count()).select_from(EVENTS).where(*where))[0][0]
        items = []
        for row in rows:
            data = dict(row._mapping)
            data["categories"] = json.loads(data.pop("categories_json") or "{}")
            items.append(data)
        return items, int(total)

    def delete_for_stream(self, stream_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                sa.delete(EVENTS).where(EVENTS.c.source_kind == SOURCE_KIND, EVENTS.c.source_id == stream_id)
            )


class WebhookSender:
    """POSTs event notices to one URL from its own thread, retrying failures with capped exponential backoff.

    The queue is bounded: when the receiver is down for long, the oldest undelivered notices are dropped (logged).
    """

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


class StreamEvents:
    """One stream's live event detector, turning final scores into stored, announced events."""

    def __init__(
        self,
        stream_id: str,
        stream_name: str,
        policy: EventPolicy,
        category_names: list[str],
        store: LiveEventStore,
        webhook: WebhookSender | None,
    ) -> None:
        self.stream_id = stream_id
        self.stream_name = stream_name
        self.policy = policy
        self.names = category_names
        self.store = store
        self.webhook = webhook
        self.detector = EventDetector(policy, category_names)
        self._start_s = 0.0
        self._started_at = 0.0
        self._peak = 0.0
        self._event_id: int | None = None  # set once the open event is confirmed (announced)
        # The last snippet fed (media end, wall clock of its end): where a gap starts, and what dates an end.
        self._last_end_s: float | None = None
        self._last_captured_at = 0.0
        # Snippets up to this index belong to a stretch already closed by `finish` (their final scores come late).
        self._closed_through = -1

    @property
    def active(self) -> bool:
        """An event is open (announced or not yet long enough to be)."""
        return self.detector.active

    def update(
        self,
        index: int,
        start_s: float,
        end_s: float,
        captured_at: float,
        score: float,
        categories: np.ndarray,
        degraded: bool = False,
        outage_s: float = 0.0,
    ) -> list[EventNotice]:
        """Feed one final score; returns the event notices it causes (an `end` of a bridged gap included).

        `outage_s`: wall-clock seconds the source was away just before this snippet (not in its media time).
        """
        if index <= self._closed_through:
            return []
        notices: list[EventNotice] = []
        if self.detector.active and self._last_end_s is not None:
            gap_s = max(0.0, start_s - self._last_end_s) + outage_s
            # No scores for longer than the exit rules wait: the event ended there, whatever comes after.
            if gap_s > self.policy.min_gap_s and (notice := self._finish("gap")) is not None:
                notices.append(notice)
        was_active = self.detector.active
        opened, closed = self.detector.update(index, start_s, end_s, score, categories, degraded)
        self._last_end_s, self._last_captured_at = end_s, captured_at
        if opened:
            self._start_s, self._started_at, self._peak, self._event_id = (
                start_s,
                captured_at - (end_s - start_s),
                score,
                None,
            )
        elif self.detector.active and not degraded:
            self._peak = max(self._peak, score)
        # Announce only on a high snippet: the detector measures an event up to its last high snippet, so a
        # duration counted through the low tail could announce an event the detector then drops as too short.
        if (
            self.detector.active
            and not degraded
            and self._event_id is None
            and score >= self.policy.exit_threshold
            and end_s - self._start_s >= self.policy.min_duration_s
        ):
            self._event_id = self.store.open(self.stream_id, self._start_s, self._started_at, self._peak)
            notices.append(self._notice("start", categories))
        if closed is not None and self._event_id is not None:
            notices.append(self._close(closed, captured_at - (end_s - closed.end_s), "scores_below_exit"))
        elif was_active and not self.detector.active:
            self._event_id = None  # too short: discarded by the policy, never announced
        for notice in notices:
            self._hook(notice)
        return notices

    def finish(self, reason: EndReason, through_index: int | None = None) -> EventNotice | None:
        """The stream stopped, stalled or lost its source: close an open event at its last scored high snippet.

        Returns the `end` notice, or None when nothing announced was open (an event still too short is dropped).
        `through_index`: the newest snippet already scored provisionally; its final score, if it comes after all,
        is not fed to the detector (the stretch it belongs to is closed).
        """
        if through_index is not None:
            self._closed_through = max(self._closed_through, through_index)
        notice = self._finish(reason)
        if notice is not None:
            self._hook(notice)
        return notice

    def _finish(self, reason: EndReason) -> EventNotice | None:
        closed = self.detector.finish()
        if closed is None or self._event_id is None:
            self._event_id = None
            return None
        # The wall clock of the last high snippet's end, counted back from the last snippet fed.
        last_end_s = self._last_end_s if self._last_end_s is not None else closed.end_s
        return self._close(closed, self._last_captured_at - (last_end_s - closed.end_s), reason)

    def _close(self, closed: Event, ended_at: float, reason: EndReason) -> EventNotice:
        assert self._event_id is not None
        self.store.close(
            self._event_id,
            end_s=closed.end_s,
            ended_at=ended_at,
            peak=closed.peak_score,
            mean=closed.mean_score,
            dominant=closed.dominant_category,
            categories=closed.categories,
            reason=reason,
        )
        notice = EventNotice(
            type="end",
            event_id=self._event_id,
            start_s=closed.start_s,
            end_s=closed.end_s,
            started_at=self._started_at,
            ended_at=ended_at,
            peak_score=closed.peak_score,
            dominant_category=closed.dominant_category,
            categories=closed.categories,
            end_reason=reason,
        )
        self._event_id = None
        return notice

    def _notice(self, kind: Literal["start", "end"], categories: np.ndarray) -> EventNotice:
        distribution = {n: float(v) for n, v in zip(self.names, categories, strict=True)}
        dominant = self.names[int(np.argmax(categories))] if len(self.names) else None
        assert self._event_id is not None
        return EventNotice(
            type=kind,
            event_id=self._event_id,
            start_s=self._start_s,
            started_at=self._started_at,
            peak_score=self._peak,
            dominant_category=dominant,
            categories=distribution,
        )

    def _hook(self, notice: EventNotice) -> None:
        if self.webhook is not None:
            payload = {
                "type": f"event.{notice.type}",
                "stream_id": self.stream_id,
                "stream_name": self.stream_name,
            }
            payload["event"] = notice.model_dump(mode="json")
            self.webhook.send(payload)
