"""Event media for live streams: a snapshot of each event's peak and an MP4 clip from a pre-roll before its start to
a post-roll after its end, kept under a retention policy.

`EventMedia` is a publisher: the dispatcher hands it event notices and stream removals, which it queues for its own
thread (a full queue drops the notice, logged: the pipeline never waits for the disk or the encoder). Frames come
from each stream's `FrameRing`, fed by the stream's reader. The thread:

- on `start`: writes the snapshot of the peak snippet's middle frame and begins the clip `pre_roll_s` before the
  event (as far back as the ring still reaches);
- on `update` (a new peak): rewrites the snapshot;
- every tick: appends the frames that arrived to each recording clip; a clip is finished (renamed from `.part`,
  or in a cluster stored in the shared database, and marked `ready`) once it reaches `post_roll_s` after the
  event's end, `max_clip_s` in length, or its stream is removed or stops sending frames. Frames are written as
  they arrive and the detector confirms an end only after `min_gap_s` of low scores, so a clip runs to the later
  of `post_roll_s` after the end and that confirmation;
- every `retention_interval_s`: removes media older than `retain_days`, then the oldest media until the total is
  under `max_total_mb`, and the media of events that were deleted.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.event_media.encoding import ClipEncoder, clip_codec, encode_jpeg
from service.event_media.ring import FrameRing
from service.event_media.store import MediaStore
from service.live.messages import EventNotice
from service.publishers.base import EventChanged, Outgoing, Publisher, StreamRemoved

logger = logging.getLogger(__name__)

TICK_S = 0.25
# An ended event's clip waits this long past its post-roll for frames that may still come.
STALL_GRACE_S = 15.0
# End reasons after which the stream's frames stop (see `service.live.messages.EndReason`): no wait then.
SOURCE_GONE = frozenset(
    {"source_stalled", "source_lost", "stream_ended", "stream_removed", "service_stopped"}
)


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    ring_bytes: int = 48 * 1024 * 1024
    max_fps: float = 10.0
    max_width: int = 640
    pre_roll_s: float = 3.0
    post_roll_s: float = 3.0
    max_clip_s: float = 300.0
    retain_s: float = 10 * 86400.0
    max_total_bytes: int = 2 * 1024**3
    retention_interval_s: float = 60.0
    # A removed stream's frames are kept this long: the scheduler may still announce an event it opened in the
    # cycle that was running when the stream was removed, and that event's snapshot and clip need them.
    removed_ring_grace_s: float = 5.0


@dataclass(eq=False)
class _Recording:
    event_id: int
    stream_id: str
    ring: FrameRing
    fps: float
    next_index: int
    max_index: int
    stop_index: int | None = None
    give_up_at: float | None = None  # monotonic
    encoder: ClipEncoder | None = None
    first_written: int | None = None


class EventMedia(Publisher):
    name = "event-media"

    def __init__(
        self,
        store: MediaStore,
        policy: MediaPolicy,
        on_drop: Callable[[], None] | None = None,
        recover_streams: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        """`recover_streams`: the streams whose unfinished clips are this process's to fail at start (default:
        every stream's; a cluster's live worker, only those assigned to it)."""
        self.store = store
        self.policy = policy
        self._recover_streams = recover_streams
        self._rings: dict[str, FrameRing] = {}
        self._removed_until: dict[str, float] = {}  # removed streams whose ring is kept a moment longer
        self._rings_lock = threading.Lock()
        self._queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=1000)
        self._recordings: dict[int, _Recording] = {}
        # Events opened on this worker, until they end: a continued one (handover) has its media times in its
        # first worker's clock, which indexes nothing in this worker's rings.
        self._opened_here: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-media", daemon=True)
        self._next_retention = 0.0
        self._on_drop = on_drop
        self.dropped = 0
        self.clips_ready = 0
        self.clips_failed = 0
        self.expired = 0

    # -- frames (reader threads, API) ----------------------------------------------------------------------
    def ring(self, stream_id: str) -> FrameRing:
        """The stream's ring, created on first use; pass its `push` to the stream's reader."""
        with self._rings_lock:
            ring = self._rings.get(stream_id)
            if ring is None:
                p = self.policy
                ring = self._rings[stream_id] = FrameRing(p.ring_bytes, p.max_fps, p.max_width)
            return ring

    def frame_sink(self, stream_id: str) -> Callable[[int, np.ndarray, float], None]:
        """What the stream's reader calls with each frame batch: pushes to the ring, and never raises (a problem
        here must not look like a camera failure to the reader); the first failure is logged."""
        ring = self.ring(stream_id)
        failed = False

        def push(first_index: int, batch: np.ndarray, fps: float) -> None:
            nonlocal failed
            try:
                ring.push(first_index, batch, fps)
            except Exception:
                if not failed:
                    logger.exception("stream %s: keeping frames for event media failed", stream_id)
                failed = True

        return push

    def ring_bytes(self) -> int:
        with self._rings_lock:
            return sum(r.nbytes for r in self._rings.values())

    def latest_jpeg(self, stream_id: str) -> bytes | None:
        """JPEG of the stream's newest frame, or None when none was read yet."""
        with self._rings_lock:
            ring = self._rings.get(stream_id)
        frame = ring.latest() if ring is not None else None
        return None if frame is None else encode_jpeg(frame)

    # -- publisher -----------------------------------------------------------------------------------------
    def start(self) -> None:
        failed = self.store.recover(None if self._recover_streams is None else self._recover_streams())
        if failed:
            logger.warning(
                "%d event clips were being recorded when the service stopped; marked failed", failed
            )
        clip_codec()  # logs once which encoder the clips use (and fails early when there is none)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(10.0)

    def publish(self, message: Outgoing) -> None:
        if not isinstance(message, EventChanged | StreamRemoved):
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
            logger.warning("event media queue full; dropped a %s", type(message).__name__)

    # -- the thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                message = None
            try:
                if isinstance(message, EventChanged):
                    self._on_event(message.stream_id, message.notice)
                elif isinstance(message, StreamRemoved):
                    self._on_removed(message.stream_id)
                self._advance()
                self._release_removed_rings()
                if time.monotonic() >= self._next_retention:
                    self.enforce_retention()
                    self._next_retention = time.monotonic() + self.policy.retention_interval_s
            except Exception:
                logger.exception("event media: handling a %s failed; continuing", type(message).__name__)
        # Shutdown: finish every clip with the frames it has, so none is left half-written.
        for recording in list(self._recordings.values()):
            self._finish(recording)
        self._release_removed_rings(everything=True)

    def _on_event(self, stream_id: str, notice: EventNotice) -> None:
        with self._rings_lock:
            ring = self._rings.get(stream_id)
        if ring is None or ring.fps is None:
            return  # no frame was ever read: nothing to show
        event_id = notice.event_id
        if notice.type == "start":
            self._opened_here.add(event_id)
            self.store.create(event_id, stream_id)
            self._snapshot(event_id, ring, notice)
            fps = float(ring.fps)
            first = max(0, round((notice.start_s - self.policy.pre_roll_s) * fps))
            recording = _Recording(
                event_id, stream_id, ring, fps, first, first + round(self.policy.max_clip_s * fps)
            )
            self._recordings[event_id] = recording
            if stream_id in self._removed_until:
                # Opened in the stream's last cycle: no frame will come; the clip is what the ring holds.
                self._append(recording)
                self._finish(recording)
        elif notice.type == "update":
            if event_id in self._opened_here:
                self._snapshot(event_id, ring, notice)
        else:
            self._opened_here.discard(event_id)
            recording = self._recordings.get(event_id)
            if recording is not None and notice.end_s is not None:
                recording.stop_index = round((notice.end_s + self.policy.post_roll_s) * recording.fps)
                # An event that ended with its source gets no more frames: its clip is finished with what it has.
                wait_s = 0.0 if notice.end_reason in SOURCE_GONE else self.policy.post_roll_s + STALL_GRACE_S
                recording.give_up_at = time.monotonic() + wait_s

    def _snapshot(self, event_id: int, ring: FrameRing, notice: EventNotice) -> None:
        fps = ring.fps or 1.0
        peak_s = notice.peak_s if notice.peak_s is not None else notice.start_s
        # The middle of the peak snippet (8 frames in at the default 16 per snippet).
        frame = ring.nearest(round(peak_s * fps) + 8)
        if frame is None:
            return
        self.store.save_snapshot(event_id, encode_jpeg(frame))

    def _on_removed(self, stream_id: str) -> None:
        for recording in [r for r in self._recordings.values() if r.stream_id == stream_id]:
            self._append(recording)
            self._finish(recording)
        self._removed_until[stream_id] = time.monotonic() + self.policy.removed_ring_grace_s

    def _release_removed_rings(self, everything: bool = False) -> None:
        now = time.monotonic()
        for stream_id, until in list(self._removed_until.items()):
            if everything or now >= until:
                del self._removed_until[stream_id]
                with self._rings_lock:
                    ring = self._rings.pop(stream_id, None)
                if ring is not None:
                    ring.clear()

    def _advance(self) -> None:
        now = time.monotonic()
        for recording in list(self._recordings.values()):
            self._append(recording)
            done = recording.next_index > recording.max_index or (
                recording.stop_index is not None and recording.next_index > recording.stop_index
            )
            if done or (recording.give_up_at is not None and now >= recording.give_up_at):
                self._finish(recording)

    def _append(self, recording: _Recording) -> None:
        last = (
            recording.max_index
            if recording.stop_index is None
            else min(recording.max_index, recording.stop_index)
        )
        frames = recording.ring.since(recording.next_index, limit=max(0, last - recording.next_index + 1))
        if frames is None:
            return
        keep = frames.indices <= last
        indices, pixels = frames.indices[keep], frames.frames[keep]
        if len(indices) == 0:
            return
        try:
            if recording.encoder is None:
                h, w = pixels.shape[1:3]
                path = self.store.partial_clip_path(recording.event_id)
                recording.encoder = ClipEncoder(path, w, h, min(recording.fps, self.policy.max_fps))
                recording.first_written = int(indices[0])
            times = (indices - recording.first_written) / np.float64(recording.fps)
            recording.encoder.write(times, pixels)
        except Exception:
            logger.exception("event %d: encoding its clip failed", recording.event_id)
            self._fail(recording)
            return
        recording.next_index = int(indices[-1]) + 1

    def _finish(self, recording: _Recording) -> None:
        self._recordings.pop(recording.event_id, None)
        encoder = recording.encoder
        if encoder is None or encoder.frames == 0:
            if encoder is not None:
                encoder.abort()
            self.store.finish_clip(recording.event_id, "failed")
            self.clips_failed += 1
            logger.warning("event %d: no frames for its clip", recording.event_id)
            return
        try:
            encoder.close()
            if not self.store.save_clip(recording.event_id, encoder.path, encoder.codec):
                return  # the event was deleted while its clip recorded
        except Exception:
            logger.exception("event %d: finishing its clip failed", recording.event_id)
            self._fail(recording)
            return
        self.clips_ready += 1
        logger.info("event %d: clip ready (%d frames, %s)", recording.event_id, encoder.frames, encoder.codec)

    def _fail(self, recording: _Recording) -> None:
        self._recordings.pop(recording.event_id, None)
        if recording.encoder is not None:
            recording.encoder.abort()
        self.store.finish_clip(recording.event_id, "failed")
        self.clips_failed += 1

    # -- retention -----------------------------------------------------------------------------------------
    def enforce_retention(self) -> int:
        """Apply the retention policy now; returns how many events' media were removed."""
        removed = 0
        for event_id in self.store.orphans():
            if event_id not in self._recordings:
                self.store.delete(event_id)
                removed += 1
        for event_id in self.store.older_than(time.time() - self.policy.retain_s):
            self.store.expire(event_id)
            removed += 1
        excess = self.store.total_bytes() - self.policy.max_total_bytes
        while excess > 0:
            oldest = self.store.oldest_with_files(64)
            if not oldest:
                break
            for event_id, size in oldest:
                self.store.expire(event_id)
                removed += 1
                excess -= size
                if excess <= 0:
                    break
        self.expired += removed
        if removed:
            logger.info("event media retention: removed the media of %d events", removed)
        return removed
