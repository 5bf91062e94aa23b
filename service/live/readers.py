"""One reader thread per stream: connect, cut the frames into snippets, hand over only the newest one.

A reader never gives up: any failure (first connection included, camera gone, a read that times out, even an
unexpected exception) puts it in `connecting`/`reconnecting` with the error kept in `last_error`, and it tries
again. How it retries depends on why it failed, so a camera that comes back is scored again within seconds however
long it was away:

- the source does not answer (`SourceUnreachable`: refused, no answer, not speaking its protocol): a cheap
  reachability check (TCP connect plus RTSP `OPTIONS` / HTTP `HEAD`, see `service.live.preflight`) every
  `probe_interval_s`, and the expensive open (PyAV or OpenCV) only once it answers. The backoff starts afresh then;
- the source answers but cannot be opened or read (wrong path, refused credentials, no frames): a capped, jittered
  exponential backoff, so a misconfigured camera is not hammered with opens that hold the open turn.

A network source that stops sending frames while connected shows `stalled` (with `last_error` saying so) once no
frame came for `stall_after_s` (at least three frame intervals, at most half the read timeout); when the read
timeout expires it reconnects. Each reader owns its thread and its capture, so a crash in one cannot touch
another.

Lag never piles up: the reader keeps at most one complete snippet waiting for the scheduler. When a newer one is
complete before the scheduler took the waiting one, the older is dropped, its frames are counted in
`dropped_frames`, and the newer snippet carries a `Gap` saying what was skipped. Local files (replay) are read at
their own frame rate, as a camera would deliver them.

Snippet i of a stream covers its frames [16 i, 16 i + 16) counted since the reader started (across reconnects), so
indices and media times line up with offline analysis of the same footage. A partial snippet cut short by a
disconnection is discarded and its slot skipped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from model.video.snippets import SnippetSpec, sample_indices
from model.video.source import StreamDecoder, VideoSource, open_source
from service.live.preflight import SourceUnreachable, check_reachable
from service.live.urls import MASK, SECRET_QUERY_KEYS, mask_url

logger = logging.getLogger(__name__)

StreamState = Literal["connecting", "live", "stalled", "reconnecting", "stopped"]
STREAM_STATES: tuple[StreamState, ...] = ("connecting", "live", "stalled", "reconnecting", "stopped")
GapReason = Literal["lag", "reconnect"]
SourceOpener = Callable[..., VideoSource]
SourceProbe = Callable[[str, float], None]
# Receives every full frame batch: (media index of its first frame, frames [F, H, W, 3] uint8 RGB, source fps).
FrameSink = Callable[[int, np.ndarray, float], None]


@dataclass(frozen=True, slots=True)
class Gap:
    """What was skipped just before a snippet: frames dropped for lag and/or an outage."""

    dropped_frames: int = 0
    reasons: tuple[GapReason, ...] = ()
    outage_s: float = 0.0

    def merge(self, other: Gap | None) -> Gap:
        if other is None:
            return self
        reasons = tuple(dict.fromkeys(self.reasons + other.reasons))
        return Gap(self.dropped_frames + other.dropped_frames, reasons, self.outage_s + other.outage_s)


@dataclass(frozen=True, slots=True)
class Snippet:
    stream_id: str
    index: int
    frames: np.ndarray  # [F_sampled, H, W, 3] uint8 RGB
    start_s: float
    end_s: float
    captured_at: float  # wall clock (time.time()) when the snippet's last frame was read
    captured_mono: float  # the same instant on the monotonic clock, for latency measurements
    gap: Gap | None = None
    degraded: bool = False  # a frame of the snippet was damaged or lost (decoder's report)


@dataclass
class Backoff:
    """Capped exponential backoff with +-20% jitter (cameras restarted together do not reconnect in lockstep)."""

    initial_s: float = 0.5
    max_s: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.initial_s * (2.0**self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempt = 0


class RateMeter:
    """Events per second over the last few seconds."""

    def __init__(self, horizon_s: float = 5.0) -> None:
        self.horizon_s = horizon_s
        self._samples: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, n: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._total += n
        self._samples.append((now, self._total))
        while self._samples and now - self._samples[0][0] > self.horizon_s:
            self._samples.popleft()

    def rate(self, now: float | None = None) -> float:
        """Between the oldest and newest sample in the horizon (frames arrive in batches, so the time since the
        last batch is not counted as silence); 0 once nothing arrived for a whole horizon."""
        now = time.monotonic() if now is None else now
        if len(self._samples) < 2 or now - self._samples[-1][0] > self.horizon_s:
            return 0.0
        (first_t, first_total), (last_t, last_total) = self._samples[0], self._samples[-1]
        span = last_t - first_t
        return (last_total - first_total) / span if span > 0.5 else 0.0


@dataclass
class ReaderStats:
    # As the reader thread last set it; `StreamReader.status()` adds `stalled`.
    state: StreamState = "connecting"
    last_error: str | None = None
    connected_since: float | None = None
    connect_attempts: int = 0
    reconnects: int = 0
    frames_in: int = 0
    snippets_out: int = 0
    dropped_frames: int = 0
    decode_errors: int = 0  # frames the decoder reported damaged, or lost, across connections
    width: int | None = None
    height: int | None = None
    source_fps: float | None = None
    note: str | None = None
    rate_in: RateMeter = field(default_factory=RateMeter)


class StreamReader:
    def __init__(
        self,
        stream_id: str,
        url: str,
        spec: SnippetSpec,
        *,
        wake: Callable[[], None],
        backoff: Backoff | None = None,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        probe_interval_s: float = 0.5,
        probe_timeout_s: float = 2.0,
        stall_after_s: float = 2.0,
        loop_files: bool = False,
        opener: SourceOpener | None = None,
        probe: SourceProbe | None = None,
        first_snippet: int = 0,
        on_frames: FrameSink | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._url = url
        self.display_url = mask_url(url)
        self.spec = spec
        self.replay = "://" not in url
        self.loop_files = loop_files
        self._wake = wake
        self._backoff = backoff or Backoff()
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = min(probe_timeout_s, open_timeout_s)
        self._stall_after_s = stall_after_s
        self._opener = opener or open_camera
        self._probe = probe or check_reachable
        self._source: VideoSource | None = None  # the open capture, for the stall watchdog
        self._on_frames = on_frames
        self._secrets = _secrets_of(url)
        self._sampled = sample_indices(spec)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pending: Snippet | None = None
        self._carry_gap: Gap | None = None
        # Media frame counter across connections; a stream resumed elsewhere (cluster) goes on from its last index.
        self._next_frame = first_snippet * spec.frames_per_snippet
        self.end_of_replay = False  # stopped because its file ended (not because it was asked to stop)
        self.stats = ReaderStats()
        self._thread = threading.Thread(target=self._run, name=f"reader-{stream_id}", daemon=True)

    # -- control -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, join_timeout_s: float = 0.0) -> None:
        """Ask the thread to end; it does at its next frame batch or timeout (it owns the capture and closes it)."""
        self._stop.set()
        with self._lock:
            self._pending = None
        if join_timeout_s > 0:
            self._thread.join(join_timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> tuple[StreamState, str | None]:
        """(state, last error), with `stalled` for a connected network source that has sent no frame for too long.

        Read from other threads: the reader thread itself sits blocked in the capture's read meanwhile.
        """
        state, error, source = self.stats.state, self.stats.last_error, self._source
        if state == "live" and source is not None and not self.replay and source.last_frame_mono > 0:
            limit = self.stall_limit_s(source.fps)
            if time.monotonic() - source.last_frame_mono >= limit:
                return "stalled", f"no frame received for more than {limit:.1f}s"
        return state, error

    def stall_limit_s(self, fps: float) -> float:
        """Seconds without a frame after which a connected source counts as stalled: `stall_after_s`, but at least
        three frame intervals (a slow camera is not stalled between frames) and at most half the read timeout
        (so `stalled` shows before the reconnection)."""
        return min(max(self._stall_after_s, 3.0 / fps), 0.5 * self._read_timeout_s)

    def take(self) -> Snippet | None:
        """The waiting snippet (at most one), for the scheduler."""
        with self._lock:
            snippet, self._pending = self._pending, None
        return snippet

    # -- the thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        ever_live = False
        outage_started = time.monotonic()
        while not self._stop.is_set():
            self.stats.connect_attempts += 1
            try:
                source = self._opener(
                    self._url,
                    open_timeout_s=self._open_timeout_s,
                    read_timeout_s=self._read_timeout_s,
                    should_stop=self._stop.is_set,
                )
            except Exception as exc:
                self._failed(exc, "reconnecting" if ever_live else "connecting")
                self._wait_to_retry(exc)
                continue
            try:
                if ever_live:
                    self.stats.reconnects += 1
                    outage = Gap(0, ("reconnect",), time.monotonic() - outage_started)
                    self._carry_gap = outage.merge(self._carry_gap)
                    logger.info("stream %s: reconnected to %s", self.stream_id, self.display_url)
                else:
                    logger.info("stream %s: connected to %s", self.stream_id, self.display_url)
                ever_live = True
                with source:
                    self._source = source
                    try:
                        self._connected(source)
                        ended_cleanly = self._pump(source)
                    finally:
                        self._source = None
            except Exception as exc:
                self._failed(exc, "reconnecting")
                outage_started = self._silent_since(source)
                self._wait_to_retry(exc)
                continue
            # A source that went silent was gone from its last frame on, not from when the read gave up.
            outage_started = self._silent_since(source)
            if self._stop.is_set():
                break
            if self.replay and ended_cleanly and not self.loop_files:
                self.stats.note = "end of file replay"
                self.end_of_replay = True
                logger.info("stream %s: end of file replay %s", self.stream_id, self.display_url)
                break
            if not self.replay:
                self._failed(ConnectionError("the stream ended or stopped sending frames"), "reconnecting")
                self._wait_to_retry(None)
        self.stats.state = "stopped"
        self.stats.connected_since = None

    def _connected(self, source: VideoSource) -> None:
        s = self.stats
        s.state, s.last_error, s.connected_since = "live", None, time.time()
        s.width, s.height, s.source_fps = source.width, source.height, source.fps

    @staticmethod
    def _silent_since(source: VideoSource) -> float:
        return source.last_frame_mono if source.last_frame_mono > 0 else time.monotonic()

    def _failed(self, exc: BaseException, state: StreamState) -> None:
        message = self._scrub(f"{type(exc).__name__}: {exc}")
        self.stats.state, self.stats.last_error, self.stats.connected_since = state, message, None

    def _wait_to_retry(self, exc: BaseException | None) -> None:
        """Wait before the next open: until the source answers when it did not, else the open backoff."""
        if self._stop.is_set():
            return
        message = self.stats.last_error
        if isinstance(exc, SourceUnreachable):
            # Gone: its return is a fresh start, whatever failed before, so the backoff cannot have grown meanwhile.
            self._backoff.reset()
            logger.warning(
                "stream %s: %s; checking every %.1fs until it answers",
                self.stream_id,
                message,
                self._probe_interval_s,
            )
            self._await_source()
            return
        delay = self._backoff.next_delay()
        logger.warning("stream %s: %s; retrying in %.1fs", self.stream_id, message, delay)
        self._stop.wait(delay)

    def _await_source(self) -> None:
        """Cheap reachability checks every `probe_interval_s` (jittered) until the source answers or the reader
        stops; each counts as a connection attempt and keeps `last_error` current."""
        while not self._stop.wait(self._probe_interval_s * random.uniform(0.8, 1.2)):
            self.stats.connect_attempts += 1
            try:
                self._probe(self._url, self._probe_timeout_s)
            except SourceUnreachable as exc:
                self.stats.last_error = self._scrub(f"{type(exc).__name__}: {exc}")
                logger.debug("stream %s: still unreachable: %s", self.stream_id, self.stats.last_error)
                continue
            logger.info("stream %s: the source answers again; reopening", self.stream_id)
            return

    def _pump(self, source: VideoSource) -> bool:
        """Read snippets until the source ends or fails; True if it ended (file end), False if stopped."""
        f = self.spec.frames_per_snippet
        fps = source.fps
        paced_start = time.monotonic()
        frames_this_connection = 0
        errors_before = source.report.decode_errors
        while not self._stop.is_set():
            decoded = source.read_frames(f)
            batch = decoded.frames
            k = len(batch)
            self.stats.decode_errors += source.report.decode_errors - errors_before
            errors_before = source.report.decode_errors
            now_mono = time.monotonic()
            self.stats.frames_in += k
            self.stats.rate_in.add(k, now_mono)
            if k < f:
                if k:
                    # The partial snippet's slot is skipped so later snippets keep their 16-frame grid.
                    self._skip_snippet(k)
                return True
            frames_this_connection += k
            if self.replay:
                # A file plays at its own frame rate: hand the snippet over when its last frame is "due".
                due = paced_start + frames_this_connection / fps
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return False
                now_mono = time.monotonic()
            self._deliver(batch, fps, now_mono, degraded=bool(decoded.damaged.any()))
            # A camera that delivered a whole snippet is healthy again: the next outage starts the backoff afresh.
            self._backoff.reset()
        return False

    def _skip_snippet(self, frames: int) -> None:
        self._next_frame += self.spec.frames_per_snippet
        self.stats.dropped_frames += frames
        self._carry_gap = Gap(frames, ("reconnect",)).merge(self._carry_gap)

    def _deliver(self, batch: np.ndarray, fps: float, captured_mono: float, degraded: bool = False) -> None:
        f = self.spec.frames_per_snippet
        start = self._next_frame
        self._next_frame += f
        if self._on_frames is not None:
            self._on_frames(start, batch, fps)  # the event media ring: every frame, scored or not
        frames = batch if len(self._sampled) == f else batch[self._sampled]
        snippet = Snippet(
            stream_id=self.stream_id,
            index=start // f,
            frames=frames,
            start_s=start / fps,
            end_s=(start + f) / fps,
            captured_at=time.time(),
            captured_mono=captured_mono,
            gap=self._carry_gap,
            degraded=degraded,
        )
        self._carry_gap = None
        with self._lock:
            replaced = self._pending
            if replaced is not None:
                # Newest wins: the scheduler has not taken the previous snippet, so it is dropped.
                self.stats.dropped_frames += f
                lag = Gap(f, ("lag",)).merge(replaced.gap)
                snippet = replace(snippet, gap=lag.merge(snippet.gap))
            self._pending = snippet
        self.stats.snippets_out += 1
        self._wake()

    def _scrub(self, text: str) -> str:
        text = text.replace(self._url, self.display_url)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


class ReaderStopped(Exception):
    """The reader was stopped while it waited for its turn to open its source."""


# OpenCV opens captures one at a time anyway (a process-wide lock inside its FFmpeg backend); PyAV has no such
# lock, so its opens run `open_concurrency` at a time: a fleet registered at once comes up in parallel, while a
# reconnecting fleet still cannot open every camera at the same moment. Taking turns here first lets a reader
# that is stopped while it waits give up, instead of opening a camera nobody wants any more.
_OPENCV_TURN = threading.Lock()
_PYAV_TURNS: dict[int, threading.BoundedSemaphore] = {}
_TURNS_LOCK = threading.Lock()
_TURN_POLL_S = 0.2
DEFAULT_OPEN_CONCURRENCY = 4


def _open_turns(decoder: StreamDecoder, concurrency: int) -> threading.Lock | threading.BoundedSemaphore:
    if decoder == "opencv":
        return _OPENCV_TURN
    with _TURNS_LOCK:
        return _PYAV_TURNS.setdefault(concurrency, threading.BoundedSemaphore(concurrency))


def open_camera(
    url: str,
    *,
    open_timeout_s: float,
    read_timeout_s: float,
    should_stop: Callable[[], bool] = lambda: False,
    decoder: StreamDecoder = "pyav",
    ffmpeg_options: Mapping[str, str] | None = None,
    open_concurrency: int = DEFAULT_OPEN_CONCURRENCY,
) -> VideoSource:
    """`open_source`, after a check that a network source answers (see `service.live.preflight`: a dead camera
    must not get as far as the decoder's open), taking turns with the other readers for what is opened: one
    open at a time with OpenCV, `open_concurrency` at a time with PyAV.

    Network URLs are decoded by `decoder` (`pyav`: damaged and lost frames reported, FFmpeg options
    `ffmpeg_options`; `opencv`: its capture, options from `OPENCV_FFMPEG_CAPTURE_OPTIONS`); files and folders
    keep their own decoders. Timeouts are seconds. Raises `SourceUnreachable`, `ReaderStopped`, or
    `VideoDecodeError` (`StreamUnavailableError` for streams) from the open."""
    if open_concurrency < 1:
        raise ValueError(f"open_concurrency must be >= 1, got {open_concurrency}")
    if "://" in url:
        check_reachable(url, open_timeout_s)
    elif Path(url).is_dir():
        # A folder of frames is read image by image, never opened as a capture: it need not wait for a turn (a
        # looping replay would otherwise pause behind every camera being opened).
        return open_source(url, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s)
    turns = _open_turns(decoder, open_concurrency)
    while not turns.acquire(timeout=_TURN_POLL_S):
        if should_stop():
            raise ReaderStopped("stopped while waiting to open the source")
    try:
        if should_stop():
            raise ReaderStopped("stopped while waiting to open the source")
        return open_source(
            url,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
            stream_decoder=decoder,
            stream_options=ffmpeg_options,
        )
    finally:
        turns.release()


def _secrets_of(url: str) -> list[str]:
    """Substrings of the URL that must never appear in messages: user info and secret query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    secrets = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        secrets += [userinfo, *userinfo.split(":")]
    secrets += [v for k, v in parse_qsl(parts.query) if k.lower() in SECRET_QUERY_KEYS and v]
    # Longest first, so a password is not half-replaced by a shorter secret it contains.
    return sorted({s for s in secrets if s}, key=len, reverse=True)
