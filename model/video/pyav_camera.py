"""Network cameras (rtsp://, http(s):// MJPEG/MPEG-TS/HLS, ...) decoded with PyAV, so that live frames carry the
same damage report as files.

OpenCV's capture hides what FFmpeg knows about a lossy stream: a grey or smeared frame after lost packets reaches
the model as a good one. Here every frame goes through `PyAVSource`'s frame path (letterboxing, media clock,
damage flags): frames FFmpeg flags corrupt (`+output_corrupt`, `frame.is_corrupt`) are kept and counted, and in a
constant-rate stream a gap in the presentation timestamps counts the frames lost before the next one.

The network side differs from a file: opening has `open_timeout_s` and every read `read_timeout_s` (PyAV's
interrupt callback), RTSP goes over TCP unless the FFmpeg options say otherwise, errors never show the URL's
credentials, and `last_frame_mono` is set after every frame for the reader's stall watchdog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import av
import numpy as np

from model.video.decode_report import DecodeReport, FrameBatch
from model.video.media_clock import MediaClock
from model.video.pyav_source import MPEG_WRAP_S, PyAVSource, gaps_are_repeats, stream_rate
from model.video.source import (
    DEFAULT_OPEN_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    FALLBACK_FPS,
    StreamUnavailableError,
)
from model.video.url_masking import mask_url

log = logging.getLogger(__name__)

# Slice threads only: frame threading holds back (threads - 1) decoded frames, latency added to every snippet and
# to every reconnect (0.2 s at 10 fps on two cores, measured), and a camera is decoded at its own pace anyway.
THREAD_TYPE = "SLICE"
RTSP_SCHEMES = frozenset({"rtsp", "rtsps"})


def parse_ffmpeg_options(text: str) -> dict[str, str]:
    """FFmpeg options in OpenCV's `OPENCV_FFMPEG_CAPTURE_OPTIONS` format (`key;value|key;value`) as a dict, so
    one string configures both live decoders. An entry without `;` is skipped with a warning, as OpenCV does."""
    options: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split("|"))):
        key, sep, value = entry.partition(";")
        if not sep or not key.strip():
            log.warning("FFmpeg option %r is not `key;value`; ignored", entry)
            continue
        options[key.strip()] = value.strip()
    return options


def _reason(exc: av.FFmpegError) -> str:
    # FFmpeg's message without the filename PyAV appends: the URL may hold credentials.
    return (exc.strerror or type(exc).__name__).strip()


class PyAVCameraSource(PyAVSource):
    """A live network stream decoded by PyAV; `read_frames(n)` gives up to n frames with media times and damage.

    Frames are RGB uint8 `[k, H, W, 3]` of the first frame's displayed size (turned upright by their display
    rotation, `report.display_rotation`; later sizes letterboxed, listed in
    `report.geometry_changes`); `times_s` are seconds from the first frame on a monotonic media clock; `damaged`
    marks frames FFmpeg flagged corrupt or that follow lost frames (`report.damaged_frames`,
    `report.lost_frames`, both summed in `report.decode_errors`). `k < n` means the stream ended.

    Opening connects within `open_timeout_s` seconds and decodes the first frame; every later read waits at most
    `read_timeout_s` seconds for data. `options` are FFmpeg demuxer/protocol options (e.g. `analyzeduration`);
    RTSP uses `rtsp_transport=tcp` unless they set another value FFmpeg accepts (`udp`, `udp_multicast`, ...).
    `count_lost_frames=False` turns off lost-frame counting from timestamp gaps (a camera that changes its frame
    rate would otherwise look lossy). Raises `StreamUnavailableError` (a `VideoDecodeError`) when the stream
    cannot be opened, gives no frame, or fails mid-stream; its message names the URL with credentials masked.
    `VideoDecodeError` when a frame is larger than `max_pixels` (width x height).
    """

    def __init__(
        self,
        url: str,
        *,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        options: Mapping[str, str] | None = None,
        fallback_fps: float = FALLBACK_FPS,
        max_pixels: int | None = None,
        count_lost_frames: bool = True,
    ) -> None:
        # Not `PyAVSource.__init__`: that one opens a file by path; the frame path it sets up is rebuilt here.
        scheme = urlsplit(url).scheme.lower()
        # `uri` is what logs and reprs show (the shared frame path logs it); the real URL stays private.
        self.uri = mask_url(url)
        self._max_pixels = max_pixels
        self._size = 1
        self._bytes_read = 0
        self._decoded = 0
        self._truncated_by_error = False
        self._ended = False
        self._closed = False
        self._close_requested = False
        self._released = False
        self._reader: int | None = None  # thread id of a read in progress
        self._state_lock = threading.Lock()
        opts = dict(options or {})
        if scheme in RTSP_SCHEMES:
            opts.setdefault("rtsp_transport", "tcp")
        started = time.monotonic()
        try:
            self._container = av.open(url, options=opts, timeout=(open_timeout_s, read_timeout_s))
        except av.FFmpegError as exc:
            raise StreamUnavailableError(self._open_failure(exc, started, open_timeout_s)) from None
        try:
            streams = list(self._container.streams.video)
            if not streams:
                raise StreamUnavailableError(f"stream {self.uri} carries no video")
            self._stream = streams[0]
            context = self._stream.codec_context
            # Keep damaged frames, flagged corrupt, instead of dropping them unseen.
            context.options = {"flags": "+output_corrupt"}
            self._stream.thread_type = THREAD_TYPE
            self._check_size(context.width, context.height)
            self._frames = self._decode()
            first = next(self._frames, None)
            if first is None:
                raise StreamUnavailableError(f"cannot read stream {self.uri}: no frame received")
            self._check_size(first.width, first.height)
        except BaseException:
            self._container.close()
            raise
        self.last_frame_mono = time.monotonic()
        self._pending: av.VideoFrame | None = first
        # A camera's display-orientation SEI (or a display matrix) turns its frames as it does a file's.
        self._orient(first)
        average, nominal = stream_rate(self._stream.average_rate), stream_rate(self._stream.guessed_rate)
        codec_rate = stream_rate(context.framerate)
        self.fps = nominal or average or codec_rate or fallback_fps
        self.frame_count = None
        timed = self._stream.time_base is not None
        self.report = DecodeReport(frames_announced=None, clock="timestamps" if timed else "frame_rate")
        self._note_rotation()
        # Gaps count as lost frames only in a stream whose measured rate is its nominal one.
        constant = (
            count_lost_frames
            and average is not None
            and nominal is not None
            and abs(average - nominal) < 0.01 * nominal
        )
        # RTP timestamps are unwrapped by FFmpeg; MPEG-TS ones (http:// camera streams) wrap after 2**33 ticks.
        wrap = MPEG_WRAP_S if self._container.format.name == "mpegts" else None
        self._clock = MediaClock(1.0 / self.fps, constant_rate=constant, wrap_s=wrap)
        self._gaps_are_repeats = gaps_are_repeats(self._container)
        self._geometry = (self.width, self.height)
        log.info(
            "%s: %s %dx%d at %.3g fps, opened in %.2fs",
            self.uri,
            self._container.format.name,
            self.width,
            self.height,
            self.fps,
            time.monotonic() - started,
        )

    def _open_failure(self, exc: av.FFmpegError, started: float, open_timeout_s: float) -> str:
        if isinstance(exc, av.ExitError) or time.monotonic() - started >= open_timeout_s:
            return f"cannot open stream {self.uri}: no answer within {open_timeout_s:g}s ({_reason(exc)})"
        return f"cannot open stream {self.uri}: {_reason(exc)}"

    # -- decoding ------------------------------------------------------------------------------------------
    def _demux_failed(self, exc: av.FFmpegError) -> None:
        """A network or demuxer error: `StreamUnavailableError` (the reader reconnects)."""
        what = "no data" if isinstance(exc, av.ExitError) else _reason(exc)
        raise StreamUnavailableError(
            f"stream {self.uri} fails after {self._decoded} frames: {what}"
        ) from None

    def _error_text(self, exc: av.FFmpegError) -> str:
        return _reason(exc)

    def _next_frame(self) -> av.VideoFrame | None:
        if self._close_requested:
            return None
        frame = super()._next_frame()
        if frame is not None:
            self.last_frame_mono = time.monotonic()
        return frame

    def _end(self) -> None:
        # A stream that ends is a dropped connection, not a truncated file.
        self._ended = True
        log.info("%s: the stream ended after %d frames", self.uri, self.report.frames_decoded)

    def read_frames(self, n: int) -> FrameBatch:
        """Up to n frames (see the class); blocks until n frames came, the stream ended, or a read timed out."""
        with self._state_lock:
            if self._close_requested:
                return FrameBatch(self._empty(), np.empty(0), np.zeros(0, dtype=bool))
            self._reader = threading.get_ident()
        try:
            return super().read_frames(n)
        finally:
            with self._state_lock:
                self._reader = None
                deferred = self._close_requested
            if deferred:
                self._release()

    @property
    def progress(self) -> float | None:
        return None

    @property
    def is_stream(self) -> bool:
        return True

    def close(self) -> None:
        """Release the connection. From another thread while a read is blocked, PyAV cannot be interrupted
        safely: the close is then done by the reading thread as soon as its read returns (at most the read
        timeout later); no further frame is delivered meanwhile."""
        with self._state_lock:
            self._close_requested = True  # from here on no read starts
            if self._reader is not None and self._reader != threading.get_ident():
                return
        self._release()

    def _release(self) -> None:
        with self._state_lock:
            if self._released:
                return
            self._released = True
        super().close()
