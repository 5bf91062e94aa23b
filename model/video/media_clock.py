"""A monotonic media clock built from each frame's own presentation timestamp.

Frames are placed at their timestamps relative to the first frame (so variable-frame-rate video lands where it was
filmed). Where the timestamps break, the clock does not: a step backwards or forwards far beyond a plausible gap
(an encoder restart, a spliced recording, a camera clock reset) is reported as a jump and the clock advances by
one frame. In a constant-frame-rate stream a gap of a few frame intervals means frames were lost in transport;
those are counted. A frame without a timestamp is placed one nominal frame interval after the previous one.
"""

from __future__ import annotations

from model.video.decode_report import TimestampJump

# A forward step longer than this (and longer than MAX_GAP_FRAMES intervals) is a discontinuity, not lost frames.
MAX_GAP_S = 5.0
MAX_GAP_FRAMES = 10
# Frames lost when a step exceeds this many nominal intervals (1.5: a late frame is not a lost one).
LOST_FRAME_FACTOR = 1.5


class MediaClock:
    """Feed each frame's timestamp in decode-output order; get its media time (seconds, from 0), frames lost
    before it and the jump it starts, if any.

    `step_s` is the nominal frame interval (seconds); `constant_rate` says whether gaps may be counted as lost
    frames (in variable-frame-rate video a long interval is just a slower part). `wrap_s`, when given, is the
    period after which the container's timestamps wrap (MPEG-TS: 2**33 ticks of 1/90000 s); a wrap is not a jump.
    """

    def __init__(self, step_s: float, *, constant_rate: bool, wrap_s: float | None = None) -> None:
        self.step_s = step_s
        self.constant_rate = constant_rate
        self.wrap_s = wrap_s
        self.max_gap_s = max(MAX_GAP_S, MAX_GAP_FRAMES * step_s)
        self._media_s: float | None = None
        self._raw_s: float | None = None

    def place(self, index: int, raw_s: float | None) -> tuple[float, int, TimestampJump | None]:
        """(media time, frames lost just before this one, the jump this frame starts or None)."""
        previous_media, previous_raw = self._media_s, self._raw_s
        self._raw_s = raw_s
        if previous_media is None:
            self._media_s = 0.0
            return 0.0, 0, None
        if raw_s is None or previous_raw is None:
            self._media_s = previous_media + self.step_s
            # A frame without a timestamp stands where the next one was due.
            if raw_s is None and previous_raw is not None:
                self._raw_s = previous_raw + self.step_s
            return self._media_s, 0, None
        delta = raw_s - previous_raw
        if delta < 0 and self.wrap_s is not None and 0 < delta + self.wrap_s <= self.max_gap_s:
            delta += self.wrap_s
        if 0 < delta <= self.max_gap_s:
            lost = 0
            if self.constant_rate and delta > LOST_FRAME_FACTOR * self.step_s:
                lost = max(0, round(delta / self.step_s) - 1)
            self._media_s = previous_media + delta
            return self._media_s, lost, None
        self._media_s = previous_media + self.step_s
        return self._media_s, 0, TimestampJump(frame=index, from_s=previous_raw, to_s=raw_s)
