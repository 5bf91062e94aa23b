"""Turning a score timeline into events, with hysteresis so a noisy score does not flap alarms.

An event opens when a snippet's score reaches `enter_threshold`; it closes once the score has stayed below
`exit_threshold` for `min_gap_s` of media time. Events shorter than `min_duration_s` are discarded, and a new
event may not open within `cooldown_s` of the last one's end. The same detector serves offline analysis (fed a
whole video) and live streams (fed one snippet at a time).

A degraded snippet (damaged or lost frames) is no evidence either way: broken video must not pass for an anomaly
or for calm. It never opens an event, and inside an open event it neither extends nor closes it and does not
count towards its scores or categories.

An open event can be carried to another detector (a live stream handed to another worker): `snapshot()` gives its
part up to the last high snippet as plain numbers, and `resume(snapshot, shift_s)` opens it in a new detector whose
media clock is `shift_s` ahead; the event closes there as if it had been seen whole, its mean and categories
counting the carried snippets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field, model_validator


class EventPolicy(BaseModel):
    enter_threshold: float = Field(0.5, ge=0, le=1)
    exit_threshold: float = Field(0.4, ge=0, le=1)
    min_duration_s: float = Field(0.0, ge=0)
    min_gap_s: float = Field(0.0, ge=0, description="time below the exit threshold before an event closes")
    cooldown_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> EventPolicy:
        if self.exit_threshold > self.enter_threshold:
            raise ValueError("exit_threshold must not exceed enter_threshold")
        return self


class Event(BaseModel):
    start_s: float
    end_s: float
    start_snippet: int
    end_snippet: int = Field(description="one past the last snippet of the event")
    peak_score: float
    mean_score: float
    dominant_category: str | None
    categories: dict[str, float]


@dataclass
class _Open:
    start_s: float
    start_snippet: int
    last_high_end_s: float
    last_high_snippet: int
    scores: list[float] = field(default_factory=list)
    # Scores up to and including the last high snippet (degraded snippets are not scored into an event).
    high_count: int = 0
    category_sum: np.ndarray | None = None
    # The sum up to the last high snippet: the low snippets after it close the event but are not part of it.
    high_category_sum: np.ndarray | None = None
    # Carried from another detector (`resume`): snippets, score sum and peak of the part seen there.
    carried_count: int = 0
    carried_sum: float = 0.0
    carried_peak: float = float("-inf")


class OpenEventSnapshot(BaseModel):
    """An open event's part up to its last high snippet, in the media clock of the detector that saw it."""

    start_s: float
    start_snippet: int
    last_high_end_s: float
    last_high_snippet: int
    count: int = Field(ge=1, description="snippets in the event up to its last high one")
    score_sum: float
    peak_score: float
    category_sum: list[float] | None = None


class EventDetector:
    """Feed snippets in order with `update`; it returns the events that closed (and says when one opened)."""

    def __init__(self, policy: EventPolicy, category_names: list[str]) -> None:
        self.policy = policy
        self.category_names = list(category_names)
        self._open: _Open | None = None
        self._cooldown_until = float("-inf")

    @property
    def active(self) -> bool:
        return self._open is not None

    def update(
        self,
        index: int,
        start_s: float,
        end_s: float,
        score: float,
        categories: np.ndarray | None,
        degraded: bool = False,
    ) -> tuple[bool, Event | None]:
        """Returns (opened now, closed event or None)."""
        p = self.policy
        current = self._open
        if degraded:
            return False, None
        if current is None:
            if score >= p.enter_threshold and start_s >= self._cooldown_until:
                self._open = _Open(start_s, index, end_s, index)
                self._add(self._open, score, categories)
                self._open.high_category_sum = self._open.category_sum
                self._open.high_count = 1
                return True, None
            return False, None
        self._add(current, score, categories)
        if score >= p.exit_threshold:
            current.last_high_end_s, current.last_high_snippet = end_s, index
            current.high_category_sum = current.category_sum
            current.high_count = len(current.scores)
            return False, None
        if end_s - current.last_high_end_s >= p.min_gap_s:
            return False, self._close()
        return False, None

    def snapshot(self) -> OpenEventSnapshot | None:
        """The open event up to its last high snippet (None when none is open)."""
        current = self._open
        if current is None:
            return None
        count, score_sum, peak = self._high_part(current)
        return OpenEventSnapshot(
            start_s=current.start_s,
            start_snippet=current.start_snippet,
            last_high_end_s=current.last_high_end_s,
            last_high_snippet=current.last_high_snippet,
            count=count,
            score_sum=score_sum,
            peak_score=peak,
            category_sum=None if current.high_category_sum is None else current.high_category_sum.tolist(),
        )

    def resume(self, snapshot: OpenEventSnapshot, shift_s: float = 0.0) -> None:
        """Open `snapshot`'s event here; this detector's media time is `shift_s` ahead of the one that saw it.
        Raises `ValueError` while an event is open."""
        if self._open is not None:
            raise ValueError("an event is open already")
        categories = None if snapshot.category_sum is None else np.asarray(snapshot.category_sum, np.float64)
        self._open = _Open(
            snapshot.start_s + shift_s,
            snapshot.start_snippet,
            snapshot.last_high_end_s + shift_s,
            snapshot.last_high_snippet,
            category_sum=categories,
            high_category_sum=categories,
            carried_count=snapshot.count,
            carried_sum=snapshot.score_sum,
            carried_peak=snapshot.peak_score,
        )

    def finish(self) -> Event | None:
        """Close an event still open at the end of the input."""
        return self._close() if self._open is not None else None

    @staticmethod
    def _high_part(current: _Open) -> tuple[int, float, float]:
        """(snippets, score sum, peak) of the event up to its last high snippet, carried ones included."""
        high = current.scores[: current.high_count]
        return (
            current.carried_count + len(high),
            current.carried_sum + float(np.sum(high)),
            max(current.carried_peak, max(high, default=float("-inf"))),
        )

    @staticmethod
    def _add(current: _Open, score: float, categories: np.ndarray | None) -> None:
        current.scores.append(float(score))
        if categories is not None:
            c = np.asarray(categories, dtype=np.float64)
            current.category_sum = c if current.category_sum is None else current.category_sum + c

    def _close(self) -> Event | None:
        current, self._open = self._open, None
        assert current is not None
        n, score_sum, peak = self._high_part(current)
        duration = current.last_high_end_s - current.start_s
        self._cooldown_until = current.last_high_end_s + self.policy.cooldown_s
        if duration < self.policy.min_duration_s:
            return None
        distribution: dict[str, float] = {}
        dominant = None
        if current.high_category_sum is not None and self.category_names:
            total = current.high_category_sum / n
            distribution = {name: float(v) for name, v in zip(self.category_names, total, strict=True)}
            dominant = self.category_names[int(np.argmax(total))]
        return Event(
            start_s=current.start_s,
            end_s=current.last_high_end_s,
            start_snippet=current.start_snippet,
            end_snippet=current.last_high_snippet + 1,
            peak_score=peak,
            mean_score=score_sum / n,
            dominant_category=dominant,
            categories=distribution,
        )


def detect_events(
    scores: np.ndarray,
    start_s: np.ndarray,
    end_s: np.ndarray,
    categories: np.ndarray | None,
    category_names: list[str],
    policy: EventPolicy,
    degraded: np.ndarray | None = None,
) -> list[Event]:
    """All events of a whole score timeline (offline analysis); `degraded` [T] bool marks broken snippets."""
    detector = EventDetector(policy, category_names)
    events: list[Event] = []
    for i, score in enumerate(scores):
        _, closed = detector.update(
            i,
            float(start_s[i]),
            float(end_s[i]),
            float(score),
            None if categories is None else categories[i],
            degraded=bool(degraded[i]) if degraded is not None else False,
        )
        if closed:
            events.append(closed)
    last = detector.finish()
    if last:
        events.append(last)
    return events
