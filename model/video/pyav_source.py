"""Video files decoded with PyAV (FFmpeg's own libraries), for what OpenCV's capture cannot tell.

The input is identified by its bytes (FFmpeg's format probe), never by its name, so raw H.264/H.265 exports
(`.h264`, `.264`, `.h265` or no extension at all) open like any container. Every frame is placed in time by its
own presentation timestamp on a monotonic `MediaClock`, damaged frames are kept but flagged (FFmpeg's
`output_corrupt` and the frame's corrupt flag), lost frames are counted from timestamp gaps in constant-rate
streams (in AVI such a gap is a null frame, a repeat of the previous picture, and counted as repeated), and a
picture-size change is letterboxed into the first frame's size and recorded. A frame with a display rotation
(the container's display matrix or an H.264/HEVC display-orientation SEI, given by PyAV as `frame.rotation` and
left to the caller to apply) is turned upright with `np.rot90`, so a portrait phone video comes out portrait;
sizes are those displayed. The container's frame count, duration and rate are hints only: limits and progress use the decoded
frames and the bytes read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np

from model.video.decode_report import DecodeReport, FrameBatch, GeometryChange
from model.video.letterbox import letterbox_into
from model.video.media_clock import MediaClock
from model.video.source import FALLBACK_FPS, VideoDecodeError, VideoSource, plausible_fps

log = logging.getLogger(__name__)

# Demuxers of video containers and elementary streams: when one of them identified the input but cannot read it,
# the input is a broken video (422), not something other than video (415).
VIDEO_DEMUXERS = frozenset(
    {
        "mov,mp4,m4a,3gp,3g2,mj2",
        "matroska,webm",
        "avi",
        "mpegts",
        "mpeg",
        "flv",
        "asf",
        "h264",
        "hevc",
        "m4v",
        "mjpeg",
        "rawvideo",
        "ivf",
        "nut",
        "mxf",
    }
)
# Demuxers that yield a "video" stream from something that is not video: still images and text.
NOT_VIDEO_DEMUXERS = frozenset({"image2", "tty"})
# MPEG-TS/PS timestamps are 33-bit counts of 1/90000 s and wrap after about 26.5 hours.
MPEG_WRAP_S = 2**33 / 90000
_LOG_LOCK = threading.Lock()
DISPLAY_MATRIX = av.sidedata.sidedata.Type.DISPLAYMATRIX


class NotVideoError(VideoDecodeError):
    """The input is not video at all: no format FFmpeg recognises, audio or data only, or a still image."""


def _open_container(path: Path) -> av.container.InputContainer:
    """`av.open`, telling a broken video (a video demuxer identified the bytes, then failed) from a file that
    is not video at all, by the demuxer named in FFmpeg's last error message."""
    with _LOG_LOCK:
        previous = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)  # FFmpeg records its last error only while logging is on
        try:
            # Raw timestamps: a backwards step is reported as a jump instead of "corrected" into a wrap.
            return av.open(str(path), options={"correct_ts_overflow": "0"})
        except av.FFmpegError as exc:
            error = exc
        finally:
            av.logging.set_level(previous)
    _, demuxer, message = getattr(error, "log", None) or (0, "", "")
    if demuxer in VIDEO_DEMUXERS:
        raise VideoDecodeError(
            f"{path}: a {demuxer} video that cannot be read (corrupt or truncated): {message.strip()}"
        ) from None
    raise NotVideoError(f"{path}: not a video (FFmpeg recognises no video format in its bytes)") from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    name = container.format.name
    if name in NOT_VIDEO_DEMUXERS or name.endswith("_pipe"):
        raise NotVideoError(f"{path}: not a video but {container.format.long_name or name}")
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["no streams"]
    raise NotVideoError(f"{path}: a {name} file with no video stream ({', '.join(kinds)})")


def stream_rate(value: Fraction | None) -> float | None:
    """A rate PyAV reports (frames/s), or None when it is missing or implausible (0, negative, 90000...)."""
    return plausible_fps(float(value), None) if value else None


def quarter_turns(frame: av.VideoFrame, current: int = 0) -> int:
    """Counter-clockwise quarter turns (0-3) that show `frame` upright, from its display matrix; `current` for a
    frame without one. FFmpeg attaches a container's display matrix to every frame, but an H.264/HEVC
    display-orientation SEI only to the frame that carries it (a camera sends it with key frames), while it holds
    for the frames after it: so the last rotation seen holds until a frame brings another.

    An angle between quarter turns (no camera writes one) is rounded to the nearest; a mirroring in the matrix is
    not applied."""
    if DISPLAY_MATRIX not in frame.side_data:
        return current
    return round(frame.rotation / 90) % 4


def turned_size(width: int, height: int, turns: int) -> tuple[int, int]:
    """(width, height) of a picture once turned by `turns` quarter turns."""
    return (height, width) if turns % 2 else (width, height)


def gaps_are_repeats(container: av.container.InputContainer) -> bool:
    """AVI (Video for Windows) codes an unchanged picture as an empty chunk, which FFmpeg's demuxer skips: the next
    frame's timestamp then jumps by design, and the header's frame count includes the repeats."""
    return container.format.name == "avi"


class PyAVSource(VideoSource):
    """A video file decoded by PyAV; `read_frames` gives frames with media times and damage flags.

    Opening decodes the first frame: `NotVideoError` when the bytes are not video, `VideoDecodeError` when a
    video yields no frame. `max_pixels` refuses any decoded frame larger than that (width x height), including
    after a mid-stream size change. Frames are turned upright by their display rotation (`width`/`height` are the
    displayed size, `report.display_rotation` the turn); frames of another displayed size than the first are
    letterboxed into the first size.
    """

    def __init__(
        self, path: str | Path, *, fallback_fps: float = FALLBACK_FPS, max_pixels: int | None = None
    ) -> None:
        path = Path(path)
        self.uri = str(path)
        self._max_pixels = max_pixels
        self._size = max(1, path.stat().st_size)
        self._bytes_read = 0
        self._decoded = 0
        self._truncated_by_error = False
        self._ended = False
        self._closed = False
        self._container = _open_container(path)
        try:
            self._stream = _video_stream(self._container, path)
            context = self._stream.codec_context
            # Keep damaged frames, flagged corrupt, instead of dropping them unseen.
            context.options = {"flags": "+output_corrupt"}
            self._stream.thread_type = "AUTO"
            # The size the stream declares, checked before a frame is decoded: a few hundred KB can hold one
            # 12000x12000 frame that takes gigabytes to decode.
            self._check_size(context.width, context.height)
            self._frames = self._decode()
            first = next(self._frames, None)
            if first is None:
                raise VideoDecodeError(
                    f"{path}: a {self._container.format.name} video with no decodable frame "
                    "(corrupt, truncated or an unsupported codec)"
                )
            self._check_size(first.width, first.height)
        except BaseException:
            self._container.close()
            raise
        self._pending: av.VideoFrame | None = first
        self._orient(first)
        announced = self._stream.frames
        # Constant rate when the average equals the nominal rate (a phone's VFR video averages something else).
        average, nominal = stream_rate(self._stream.average_rate), stream_rate(self._stream.guessed_rate)
        if first.pts is not None:
            clock, fps = "timestamps", average or nominal or fallback_fps
        elif (codec_rate := stream_rate(context.framerate)) is not None:
            clock, fps = "frame_rate", codec_rate
        else:
            # Raw elementary streams without timing (FFmpeg's raw demuxer then assumes 25 fps, as we do).
            clock, fps = "assumed_rate", fallback_fps
        self.fps = fps
        self.frame_count = announced if announced > 0 else None
        self.report = DecodeReport(frames_announced=self.frame_count, clock=clock)  # type: ignore[arg-type]
        self._note_rotation()
        constant = average is not None and nominal is not None and abs(average - nominal) < 0.01 * nominal
        wrap = MPEG_WRAP_S if self._stream.time_base == Fraction(1, 90000) else None
        self._clock = MediaClock(1.0 / fps, constant_rate=constant, wrap_s=wrap)
        self._gaps_are_repeats = gaps_are_repeats(self._container)
        self._geometry = (self.width, self.height)

    # -- decoding ------------------------------------------------------------------------------------------
    def _decode(self) -> Iterator[av.VideoFrame]:
        """Every decodable frame; a packet the decoder rejects is skipped (its frame shows up as lost), a demuxer
        error ends the input (`_demux_failed`)."""
        demux = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                self._demux_failed(exc)
                return
            if packet.pos is not None and packet.pos > 0:
                self._bytes_read = packet.pos + packet.size
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                log.debug("%s: packet rejected by the decoder: %s", self.uri, self._error_text(exc))
                continue
            for frame in frames:
                self._decoded += 1
                yield frame

    def _demux_failed(self, exc: av.FFmpegError) -> None:
        """A demuxer error mid-file: the input ends there, reported as truncated."""
        log.warning("%s: the data ends in an error after %d frames: %s", self.uri, self._decoded, exc)
        self._truncated_by_error = True

    def _error_text(self, exc: av.FFmpegError) -> str:
        return str(exc)

    def _check_size(self, width: int, height: int) -> None:
        if self._max_pixels and width * height > self._max_pixels:
            raise VideoDecodeError(
                f"video frames are {width}x{height}, larger than the limit of {self._max_pixels} pixels per frame"
            )

    def _next_frame(self) -> av.VideoFrame | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._ended or self._closed:
            return None
        frame = next(self._frames, None)
        if frame is None:
            self._end()
        return frame

    def _end(self) -> None:
        self._ended = True
        r = self.report
        if self._gaps_are_repeats and not self._truncated_by_error and r.frames_announced is not None:
            # Null frames at the very end have no later frame to show their gap: the header still counts them.
            r.repeated_frames += max(
                0, r.frames_announced - r.frames_decoded - r.lost_frames - r.repeated_frames
            )
        r.truncated = self._truncated_by_error or (
            r.frames_announced is not None
            and r.frames_decoded + r.lost_frames + r.repeated_frames < r.frames_announced
        )
        if r.truncated:
            log.warning(
                "%s: truncated: %d frames decoded of %s announced",
                self.uri,
                r.frames_decoded,
                r.frames_announced,
            )

    def _orient(self, first: av.VideoFrame) -> None:
        """The source's size: the first frame's as displayed (its display rotation applied)."""
        self._turns = quarter_turns(first)
        self.width, self.height = turned_size(first.width, first.height, self._turns)

    def _note_rotation(self) -> None:
        self.report.display_rotation = 90 * self._turns  # type: ignore[assignment]
        if self._turns:
            log.info(
                "%s: frames carry a display rotation of %d degrees: turned upright to %dx%d",
                self.uri,
                90 * self._turns,
                self.width,
                self.height,
            )

    def _store(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        # Sizes as displayed: a rotation that changes mid-stream is a size change like any other.
        self._turns = quarter_turns(frame, self._turns)
        geometry = turned_size(frame.width, frame.height, self._turns)
        if geometry != self._geometry:
            self._check_size(*geometry)
            self._geometry = geometry
            change = GeometryChange(frame=self.report.frames_decoded, width=geometry[0], height=geometry[1])
            self.report.geometry_changes.append(change)
            log.info("%s: picture size changes to %dx%d at frame %d", self.uri, *geometry, change.frame)
        rgb = frame.to_ndarray(format="rgb24")
        if self._turns:
            rgb = np.rot90(rgb, self._turns)  # a view: the copy into `out` below is the only one
        if geometry == (self.width, self.height):
            out[:] = rgb
        else:
            letterbox_into(np.ascontiguousarray(rgb), out)

    def read_frames(self, n: int) -> FrameBatch:
        out = np.empty((max(n, 0), self.height, self.width, 3), dtype=np.uint8)
        times = np.empty(max(n, 0), dtype=np.float64)
        damaged = np.zeros(max(n, 0), dtype=bool)
        r = self.report
        k = 0
        while k < n:
            frame = self._next_frame()
            if frame is None:
                break
            self._store(frame, out[k])
            raw = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
            times[k], lost, jump = self._clock.place(r.frames_decoded, raw)
            if self._gaps_are_repeats:
                r.repeated_frames += lost
                lost = 0
            if jump is not None:
                r.timestamp_jumps.append(jump)
                log.info(
                    "%s: timestamps jump from %.3f s to %.3f s at frame %d",
                    self.uri,
                    jump.from_s,
                    jump.to_s,
                    jump.frame,
                )
            damaged[k] = frame.is_corrupt or lost > 0
            r.damaged_frames += int(frame.is_corrupt)
            r.lost_frames += lost
            r.decode_errors += int(frame.is_corrupt) + lost
            r.frames_decoded += 1
            k += 1
        if k < n:
            return FrameBatch(out[:k], times[:k], damaged[:k])
        return FrameBatch(out, times, damaged)

    def read_batch(self, n: int) -> np.ndarray:
        return self.read_frames(n).frames

    @property
    def progress(self) -> float | None:
        """Fraction of the file's bytes demuxed so far (the container's frame count is not trusted)."""
        return 1.0 if self._ended else min(self._bytes_read / self._size, 1.0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending = None
            self._frames.close()
            self._container.close()


def count_video_packets(path: str | Path, limit: int | None = None) -> int | None:
    """Frames in a file's data: its video packets, counted by demuxing without decoding (fast, and unlike the
    container's frame count, a truncated or mislabelled file cannot overstate it). None once more than `limit`.

    Raises `NotVideoError` / `VideoDecodeError` as `PyAVSource` does.
    """
    path = Path(path)
    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
                    if limit is not None and count > limit:
                        return None
        except av.FFmpegError as exc:
            log.debug("%s: demuxing stops after %d packets: %s", path, count, exc)
        return count
    finally:
        container.close()
