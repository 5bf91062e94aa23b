"""Live events: a hysteresis detector per stream fed with final scores, stored in the database, and announced as notices
(`start`, `update` at each new peak, `end`) that the scheduler hands to the publishers.

An event is announced (stored, `start` notice) only once it has lasted `min_duration_s`, so a short blip
that the policy would discard never raises an alarm. Events share the `events` table with file analysis
(`source_kind = "stream"`, `source_id` = stream id); this module adds wall-clock start/end, a status column and
the reason each live event ended (`end_reason`, see `EndReason`).

An event never outlives its source's scores: when the stream stops (end of a replayed file, removal, shutdown),
stalls or loses its source, its open event is closed at once at its last scored high snippet, and a snippet that
follows a gap (frames dropped, an outage) longer than the policy's `min_gap_s` first closes the event it would
otherwise be bridged into. Events left open by a crash are marked `interrupted` at the next start-up.

Handover (cluster mode, `store_handover`): while an announced event is open, each high snippet stores the event's state up to it
(`handover_json`: the detector's snapshot and the wall clock of that snippet's end). A worker that takes over the
stream from a lost or stopped worker continues the event under the same id (`take_over`) when that state is at most
`HANDOVER_MAX_S` old: the snippets not scored during the handover are not a gap in the scene (the camera went on;
the service did not see it), so the next final score decides: high, the event goes on; low, it closes at its last
high snippet before the handover. Older or stateless open events are marked `interrupted`. A continued event's
media times stay in the clock of the worker that opened it (`start_s` and `end_s` of one event are comparable); its
clip is the one the first worker recorded (marked failed, as it was cut), and its snapshot is not replaced.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa

from model.events import Event, EventDetector, EventPolicy, OpenEventSnapshot
from service.live.messages import EndReason, EventNotice
from service.storage import EVENTS, Database, EventStore

logger = logging.getLogger(__name__)

SOURCE_KIND = "stream"
# An open event whose last stored high snippet is older than this when its stream is taken over is not continued.
HANDOVER_MAX_S = 30.0
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

    def open(
        self,
        stream_id: str,
        start_s: float,
        started_at: float,
        peak: float,
        *,
        stream_name: str | None = None,
        dominant: str | None = None,
        categories: dict[str, float] | None = None,
    ) -> int:
        with self.db.transaction() as conn:
            cur = conn.execute(
                sa.insert(EVENTS).values(
                    source_kind=SOURCE_KIND,
                    source_id=stream_id,
                    source_name=stream_name,
                    start_s=start_s,
                    peak_score=peak,
                    dominant_category=dominant,
                    categories_json=json.dumps(categories or {}),
                    created_at=time.time(),
                    started_at=started_at,
                    status="open",
                )
            )
            return int(cur.inserted_primary_key[0])

    def update_peak(
        self, event_id: int, *, peak: float, dominant: str | None, categories: dict[str, float]
    ) -> None:
        """An open event reached a new peak: its peak and the category distribution seen there."""
        with self.db.transaction() as conn:
            conn.execute(
                sa.update(EVENTS)
                .where(EVENTS.c.id == event_id, EVENTS.c.status == "open")
                .values(peak_score=peak, dominant_category=dominant, categories_json=json.dumps(categories))
            )

    def get(self, event_id: int) -> dict[str, Any] | None:
        rows = self.db.query(sa.select(EVENTS).where(EVENTS.c.id == event_id))
        return _event_row(rows[0]) if rows else None

    def delete(self, event_id: int) -> bool:
        with self.db.transaction() as conn:
            return conn.execute(sa.delete(EVENTS).where(EVENTS.c.id == event_id)).rowcount > 0

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
        # Only an open event: one another worker has closed or marked interrupted meanwhile keeps its ending.
        with self.db.transaction() as conn:
            conn.execute(
                sa.update(EVENTS)
                .where(EVENTS.c.id == event_id, EVENTS.c.status == "open")
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

    def save_handover(
        self, event_id: int, snapshot: OpenEventSnapshot, last_high_at: float, peak_s: float
    ) -> None:
        """Store an open event's state at its newest high snippet (ended at wall clock `last_high_at`; `peak_s`:
        media time of the peak snippet's start)."""
        state = {"snapshot": snapshot.model_dump(), "last_high_at": last_high_at, "peak_s": peak_s}
        with self.db.transaction() as conn:
            conn.execute(
                sa.update(EVENTS)
                .where(EVENTS.c.id == event_id, EVENTS.c.status == "open")
                .values(handover_json=json.dumps(state))
            )

    def take_over(
        self, stream_ids: Sequence[str], now: float | None = None
    ) -> tuple[dict[str, dict[str, Any]], int]:
        """Open events of `stream_ids` left by their previous worker: those with a stored state at most
        `HANDOVER_MAX_S` old stay open and are returned (stream id -> event row, with `handover` parsed); every
        other one is marked interrupted. Returns (those continued, how many were marked interrupted)."""
        now = time.time() if now is None else now
        where = [
            EVENTS.c.source_kind == SOURCE_KIND,
            EVENTS.c.status == "open",
            EVENTS.c.source_id.in_(list(stream_ids)),
        ]
        rows = self.db.query(sa.select(EVENTS).where(*where).order_by(EVENTS.c.id))
        continued: dict[str, dict[str, Any]] = {}
        for row in rows:
            state = json.loads(row.handover_json) if row.handover_json else None
            # One open event per stream at most; should there be more, the newest is the one continued.
            if state is not None and now - float(state["last_high_at"]) <= HANDOVER_MAX_S:
                continued[str(row.source_id)] = _event_row(row) | {"handover": state}
        keep = [event["id"] for event in continued.values()]
        return continued, self.mark_interrupted(stream_ids, keep=keep, now=now)

    def mark_interrupted(
        self, stream_ids: Sequence[str] | None = None, keep: Sequence[int] = (), now: float | None = None
    ) -> int:
        """Events a crash left open (of `stream_ids`, or of every stream; `keep`: ids left open); they keep their
        start, with no end, and `end_reason` service_interrupted. Returns how many."""
        where = [
            EVENTS.c.source_kind == SOURCE_KIND,
            EVENTS.c.status == "open",
            EVENTS.c.id.not_in(list(keep)),
        ]
        if stream_ids is not None:
            where.append(EVENTS.c.source_id.in_(list(stream_ids)))
        with self.db.transaction() as conn:
            cur = conn.execute(
                sa.update(EVENTS)
                .where(*where)
                .values(
                    status="interrupted",
                    ended_at=time.time() if now is None else now,
                    end_reason="service_interrupted",
                )
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
        return [_event_row(row) for row in rows], int(total)

    def delete_for_stream(self, stream_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                sa.delete(EVENTS).where(EVENTS.c.source_kind == SOURCE_KIND, EVENTS.c.source_id == stream_id)
            )


def _event_row(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["categories"] = json.loads(data.pop("categories_json") or "{}")
    data.pop("handover_json", None)  # the service's own state, not part of the event
    return data


class StreamEvents:
    """One stream's live event detector, turning final scores into stored, announced events."""

    def __init__(
        self,
        stream_id: str,
        stream_name: str,
        policy: EventPolicy,
        category_names: list[str],
        store: LiveEventStore,
        handover: dict[str, Any] | None = None,
        store_handover: bool = True,
        on_close: Callable[[int, float, float], None] | None = None,
    ) -> None:
        """`handover`: an open event row from `LiveEventStore.take_over`, continued from the first final score.
        `store_handover`: store an open event's state at each high snippet (a database write), for a worker that
        may take the stream over (cluster mode); a single service marks what a restart finds open interrupted.
        `on_close(event_id, start_s, end_s)`: called once an event is stored closed, with its span in this
        detector's media seconds (a continued event's stored times are in its first worker's clock); an error
        there is logged, the event stays closed."""
        self.stream_id = stream_id
        self.stream_name = stream_name
        self.policy = policy
        self.names = category_names
        self.store = store
        self.detector = EventDetector(policy, category_names)
        self._start_s = 0.0
        self._started_at = 0.0
        self._peak = 0.0
        self._peak_s = 0.0  # media time of the peak snippet's start
        self._event_id: int | None = None  # set once the open event is confirmed (announced)
        # The last snippet fed (media end, wall clock of its end): where a gap starts, and what dates an end.
        self._last_end_s: float | None = None
        self._last_captured_at = 0.0
        # Snippets up to this index belong to a stretch already closed by `finish` (their final scores come late).
        self._closed_through = -1
        self._handover = handover
        self._store_handover = store_handover
        self._on_close = on_close
        # A continued event's media clock is this much behind this detector's (0 for events opened here).
        self._clock_shift = 0.0

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
        if self._handover is not None:
            handover, self._handover = self._handover, None
            if (notice := self._continue(handover, start_s, end_s, captured_at)) is not None:
                notices.append(notice)
        if self.detector.active and self._last_end_s is not None:
            gap_s = max(0.0, start_s - self._last_end_s) + outage_s
            # No scores for longer than the exit rules wait: the event ended there, whatever comes after.
            if gap_s > self.policy.min_gap_s and (notice := self._finish("gap")) is not None:
                notices.append(notice)
        was_active = self.detector.active
        new_peak = False
        opened, closed = self.detector.update(index, start_s, end_s, score, categories, degraded)
        self._last_end_s, self._last_captured_at = end_s, captured_at
        if opened:
            self._start_s, self._started_at, self._peak, self._peak_s, self._event_id = (
                start_s,
                captured_at - (end_s - start_s),
                score,
                start_s,
                None,
            )
        elif self.detector.active and not degraded and score > self._peak:
            self._peak, self._peak_s, new_peak = score, start_s + self._clock_shift, True
        # Announce only on a high snippet: the detector measures an event up to its last high snippet, so a
        # duration counted through the low tail could announce an event the detector then drops as too short.
        if (
            self.detector.active
            and not degraded
            and self._event_id is None
            and score >= self.policy.exit_threshold
            and end_s - self._start_s >= self.policy.min_duration_s
        ):
            start = self._notice("start", categories)
            self._event_id = self.store.open(
                self.stream_id,
                self._start_s,
                self._started_at,
                self._peak,
                stream_name=self.stream_name,
                dominant=start.dominant_category,
                categories=start.categories,
            )
            notices.append(start.model_copy(update={"event_id": self._event_id}))
        elif new_peak and self._event_id is not None:
            update = self._notice("update", categories)
            self.store.update_peak(
                self._event_id,
                peak=self._peak,
                dominant=update.dominant_category,
                categories=update.categories,
            )
            notices.append(update)
        if closed is not None and self._event_id is not None:
            notices.append(self._close(closed, captured_at - (end_s - closed.end_s), "scores_below_exit"))
        elif was_active and not self.detector.active:
            self._event_id = None  # too short: discarded by the policy, never announced
        elif (
            self._store_handover
            and self._event_id is not None
            and not degraded
            and score >= self.policy.exit_threshold
            and (snapshot := self.detector.snapshot()) is not None
        ):
            self.store.save_handover(self._event_id, snapshot, captured_at, self._peak_s)
        return notices

    def _continue(
        self, handover: dict[str, Any], start_s: float, end_s: float, captured_at: float
    ) -> EventNotice | None:
        """Take up the event another worker left open, before the first final score here is fed."""
        state = handover["handover"]
        snapshot = OpenEventSnapshot.model_validate(state["snapshot"])
        last_high_at = float(state["last_high_at"])
        # wall clock = media time + offset in each worker's clock: this worker's media time = the first's + shift
        shift = (last_high_at - snapshot.last_high_end_s) - (captured_at - end_s)
        self.detector.resume(snapshot, shift)
        self._event_id, self._clock_shift = int(handover["id"]), -shift
        self._start_s, self._started_at = float(handover["start_s"]), float(handover["started_at"])
        self._peak, self._peak_s = float(handover["peak_score"]), float(state["peak_s"])
        self._last_end_s, self._last_captured_at = snapshot.last_high_end_s + shift, last_high_at
        logger.info("stream %s: continues event %d from its previous worker", self.stream_id, self._event_id)
        if captured_at - (end_s - start_s) - last_high_at > HANDOVER_MAX_S:
            return self._finish("gap")  # no scores for too long: it ended before the handover
        self._last_end_s = None  # the handover itself is no gap in the scene
        return None

    def finish(self, reason: EndReason, through_index: int | None = None) -> EventNotice | None:
        """The stream stopped, stalled or lost its source: close an open event at its last scored high snippet.

        Returns the `end` notice, or None when nothing announced was open (an event still too short is dropped).
        `through_index`: the newest snippet already scored provisionally; its final score, if it comes after all,
        is not fed to the detector (the stretch it belongs to is closed).
        """
        if through_index is not None:
            self._closed_through = max(self._closed_through, through_index)
        return self._finish(reason)

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
        shift, self._clock_shift = self._clock_shift, 0.0
        self.store.close(
            self._event_id,
            end_s=closed.end_s + shift,
            ended_at=ended_at,
            peak=closed.peak_score,
            mean=closed.mean_score,
            dominant=closed.dominant_category,
            categories=closed.categories,
            reason=reason,
        )
        if self._on_close is not None:
            try:
                self._on_close(self._event_id, closed.start_s, closed.end_s)
            except Exception:
                logger.exception("stream %s: after closing event %d", self.stream_id, self._event_id)
        notice = EventNotice(
            type="end",
            event_id=self._event_id,
            start_s=closed.start_s + shift,
            end_s=closed.end_s + shift,
            started_at=self._started_at,
            ended_at=ended_at,
            peak_score=closed.peak_score,
            peak_s=self._peak_s,
            dominant_category=closed.dominant_category,
            categories=closed.categories,
            end_reason=reason,
        )
        self._event_id = None
        return notice

    def _notice(self, kind: Literal["start", "update"], categories: np.ndarray) -> EventNotice:
        distribution = {n: float(v) for n, v in zip(self.names, categories, strict=True)}
        dominant = self.names[int(np.argmax(categories))] if len(self.names) else None
        return EventNotice(
            type=kind,
            event_id=self._event_id if self._event_id is not None else 0,  # `start`: set once stored
            start_s=self._start_s,
            started_at=self._started_at,
            peak_score=self._peak,
            peak_s=self._peak_s,
            dominant_category=dominant,
            categories=distribution,
        )
