"""Frame sources: video files, folders of frames and stream URLs, all read as batches of RGB uint8 frames.

Every source is opened by reading its first frame, so an empty, corrupt, non-video or unsupported input
fails at open time with a `VideoDecodeError` that says what is wrong, instead of yielding zero frames later.
"""

from __future__ import annotations

import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import cv2
import numpy as np

from model.video.decode_report import DecodeReport, FrameBatch, GeometryChange
from model.video.letterbox import letterbox_into
from model.video.url_masking import mask_url

log = logging.getLogger(__name__)

# UCSD Ped2 and most frame dumps carry no frame rate; the project's Ped2 data is 10 fps.
DEFAULT_FOLDER_FPS = 10.0
# Used when a container or stream reports no usable frame rate (0, NaN or absurd values such as 90000).
FALLBACK_FPS = 25.0
MAX_PLAUSIBLE_FPS = 1000.0
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 10.0
# What decodes stream URLs: PyAV (`model/video/pyav_camera.py`, reports damaged and lost frames) or OpenCV.
StreamDecoder = Literal["pyav", "opencv"]


class VideoDecodeError(ValueError):
    """The input cannot be read as video: missing, empty, corrupt, not video, unsupported or unreachable."""


class StreamUnavailableError(VideoDecodeError):
    """A stream URL could not be opened or gave no frame (camera down, wrong URL, network); worth retrying."""


class VideoSource(ABC):
    """A sequence of RGB frames of a fixed size, read in batches.

    `read_batch(n)` returns `[k, H, W, 3]` uint8 with `k <= n`; `k == 0` means the source is exhausted (or,
    for a stream, that the connection ended). Frames whose size differs from the first frame are letterboxed
    into it (scaled with their aspect ratio kept, black borders), never stretched, so a batch is always one
    array; the change is recorded in `report.geometry_changes`. `read_frames(n)` gives the same frames with
    their media times and damage flags; `report` says what decoding produced so far.
    """

    uri: str
    fps: float
    frame_count: int | None  # what the container announces: a hint, never a limit
    width: int
    height: int
    report: DecodeReport
    # Monotonic time the newest frame arrived, for a watchdog on another thread (a stalled camera blocks
    # `read_batch` until its read timeout; this shows how long nothing has come meanwhile). 0 = not tracked.
    last_frame_mono: float = 0.0

    @abstractmethod
    def read_batch(self, n: int) -> np.ndarray: ...

    def read_frames(self, n: int) -> FrameBatch:
        """Up to n frames with media times (frame index / fps: this source has no per-frame timestamps)."""
        frames = self.read_batch(n)
        k = len(frames)
        first = self.report.frames_decoded
        self.report.frames_decoded += k
        damaged = np.zeros(k, dtype=bool)
        damaged[list(self._damaged_in_last_batch)] = True
        self.report.damaged_frames += int(damaged.sum())
        self.report.decode_errors += int(damaged.sum())
        return FrameBatch(frames, (first + np.arange(k)) / self.fps, damaged)

    # Positions in the last `read_batch` result of frames that stand in for ones that could not be decoded.
    _damaged_in_last_batch: tuple[int, ...] | list[int] = ()

    @property
    def progress(self) -> float | None:
        """Fraction of the input read so far, None where unknown (streams)."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    @property
    def is_stream(self) -> bool:
        return False

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({mask_url(self.uri)!r}, {self.width}x{self.height}, fps={self.fps:g}, "
            f"frames={self.frame_count})"
        )

    def _empty(self) -> np.ndarray:
        return np.empty((0, self.height, self.width, 3), dtype=np.uint8)

    def _store_rgb(self, bgr: np.ndarray, out: np.ndarray) -> None:
        """Convert one decoded BGR/grey frame straight into its slot of the batch array (one copy)."""
        if bgr.shape[0] != self.height or bgr.shape[1] != self.width:
            boxed = np.empty((self.height, self.width, *bgr.shape[2:]), dtype=bgr.dtype)
            letterbox_into(bgr, boxed)
            bgr = boxed
        if bgr.ndim == 2:
            cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB, dst=out)
        elif bgr.shape[2] == 4:
            cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB, dst=out)
        else:
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out)


def plausible_fps(value: float, fallback: float | None) -> float | None:
    """`value` when it is a believable frame rate, else `fallback` (0, negative, NaN and 90000 fps are not)."""
    if not np.isfinite(value) or value <= 0 or value > MAX_PLAUSIBLE_FPS:
        return fallback
    return float(value)


class CaptureSource(VideoSource):
    """A video file or stream decoded by OpenCV's FFmpeg backend."""

    def __init__(
        self,
        uri: str,
        *,
        stream: bool,
        fallback_fps: float = FALLBACK_FPS,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self.uri = uri
        self._stream = stream
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(read_timeout_s * 1000),
        ]
        self._cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        error = StreamUnavailableError if stream else VideoDecodeError
        what = "stream" if stream else "video file"
        if not self._cap.isOpened():
            self._cap.release()
            reason = (
                "could not connect or the URL is wrong"
                if stream
                else "not a video, corrupt, or a container/codec FFmpeg cannot read"
            )
            raise error(f"cannot open {what} {mask_url(uri)}: {reason}")
        ok, first = self._cap.read()
        if not ok or first is None or first.size == 0:
            self._cap.release()
            reason = (
                "no frame received"
                if stream
                else "no decodable frame (corrupt, truncated or unsupported codec)"
            )
            raise error(f"cannot read {what} {mask_url(uri)}: {reason}")
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        self.fps = plausible_fps(self._cap.get(cv2.CAP_PROP_FPS), fallback_fps) or FALLBACK_FPS
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not stream else 0
        # Containers may report an estimate; it is a hint only, the decoded frames are the truth.
        self.frame_count = count if count > 0 else None
        self.report = DecodeReport(frames_announced=self.frame_count, clock="frame_rate")
        self._geometry = (self.width, self.height)
        self._pending: np.ndarray | None = first
        self._closed = False
        self.last_frame_mono = time.monotonic()

    @property
    def is_stream(self) -> bool:
        return self._stream

    def read_batch(self, n: int) -> np.ndarray:
        if n <= 0 or self._closed:
            return self._empty()
        out = np.empty((n, self.height, self.width, 3), dtype=np.uint8)
        k = 0
        if self._pending is not None:
            self._store_rgb(self._pending, out[0])
            self._pending = None
            k = 1
        while k < n:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                break
            self.last_frame_mono = time.monotonic()
            if (frame.shape[1], frame.shape[0]) != self._geometry:
                self._note_geometry(frame, k)
            self._store_rgb(frame, out[k])
            k += 1
        return out if k == n else out[:k]

    def _note_geometry(self, frame: np.ndarray, k: int) -> None:
        self._geometry = (frame.shape[1], frame.shape[0])
        change = GeometryChange(
            frame=self.report.frames_decoded + k, width=frame.shape[1], height=frame.shape[0]
        )
        self.report.geometry_changes.append(change)
        log.info("%s: picture size changes to %dx%d", mask_url(self.uri), *self._geometry)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending = None
            self._cap.release()


def _natural_key(path: Path) -> tuple:
    # 2.jpg before 10.jpg, and zero-padded names (Ped2's 000.jpg) keep their order.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


class FrameFolderSource(VideoSource):
    """A folder of image files, one frame each, in natural name order (e.g. Ped2's 000.jpg, 001.jpg...)."""

    def __init__(self, folder: Path, *, fps: float = DEFAULT_FOLDER_FPS) -> None:
        self.uri = str(folder)
        images = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        self._files = sorted(images, key=_natural_key)
        if not self._files:
            raise VideoDecodeError(
                f"frame folder {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        first = self._imread(self._files[0])
        if first is None:
            raise VideoDecodeError(
                f"frame folder {folder}: cannot decode its first image {self._files[0].name}"
            )
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        self.fps = float(fps)
        self.frame_count = len(self._files)
        self.report = DecodeReport(frames_announced=self.frame_count, clock="frame_rate")
        self._pending: np.ndarray | None = first
        self._last: np.ndarray = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        self._next = 1

    @staticmethod
    def _imread(path: Path) -> np.ndarray | None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return image if image is not None and image.size else None

    def read_batch(self, n: int) -> np.ndarray:
        remaining = len(self._files) - self._next + (self._pending is not None)
        k = max(0, min(n, remaining))
        out = np.empty((k, self.height, self.width, 3), dtype=np.uint8)
        self._damaged_in_last_batch = []
        for i in range(k):
            if self._pending is not None:
                image, self._pending = self._pending, None
            else:
                path = self._files[self._next]
                self._next += 1
                image = self._imread(path)
                if image is None:
                    # A broken image mid-folder must not shift every later frame: repeat the previous one.
                    log.warning("%s: cannot decode %s, repeating the previous frame", self.uri, path.name)
                    out[i] = out[i - 1] if i else self._last
                    self._damaged_in_last_batch.append(i)
                    continue
            self._store_rgb(image, out[i])
        if k:
            self._last = out[k - 1].copy()
        return out

    @property
    def progress(self) -> float:
        return (self._next - (self._pending is not None)) / len(self._files)

    def close(self) -> None:
        self._next = len(self._files)
        self._pending = None


def open_source(
    uri: str | os.PathLike[str],
    *,
    folder_fps: float = DEFAULT_FOLDER_FPS,
    fallback_fps: float = FALLBACK_FPS,
    open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    max_pixels: int | None = None,
    stream_decoder: StreamDecoder = "opencv",
    stream_options: Mapping[str, str] | None = None,
) -> VideoSource:
    """Open a video file, a folder of frames, or a stream URL (rtsp/http/...), reading its first frame.

    Files are decoded by PyAV (`PyAVSource`: identified by content, per-frame timestamps, damaged and lost
    frames reported), folders image by image (`FrameFolderSource`), stream URLs by `stream_decoder`: OpenCV
    (`CaptureSource`, no damage report; FFmpeg options from `OPENCV_FFMPEG_CAPTURE_OPTIONS`) or PyAV
    (`PyAVCameraSource`, FFmpeg options `stream_options`). Timeouts are seconds. Raises `VideoDecodeError` (a
    `ValueError`) with a human-readable reason when the input cannot be decoded, `NotVideoError` (a subclass)
    when a file is not video at all, and `StreamUnavailableError` (a subclass) when a stream URL cannot be
    reached. `max_pixels` refuses larger decoded frames (files and PyAV streams).
    """
    text = os.fspath(uri)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme:
        if scheme == "file":
            return open_source(
                urlsplit(text).path, folder_fps=folder_fps, fallback_fps=fallback_fps, max_pixels=max_pixels
            )
        if scheme not in STREAM_SCHEMES:
            raise VideoDecodeError(
                f"unsupported URL scheme {scheme!r} in {mask_url(text)} "
                f"(use one of {', '.join(STREAM_SCHEMES)})"
            )
        if not urlsplit(text).hostname:
            raise VideoDecodeError(f"malformed stream URL {mask_url(text)}: no host")
        if stream_decoder == "pyav":
            from model.video.pyav_camera import PyAVCameraSource  # imports this module

            return PyAVCameraSource(
                text,
                open_timeout_s=open_timeout_s,
                read_timeout_s=read_timeout_s,
                options=stream_options,
                fallback_fps=fallback_fps,
                max_pixels=max_pixels,
            )
        return CaptureSource(
            text,
            stream=True,
            fallback_fps=fallback_fps,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
        )
    path = Path(text)
    if path.is_dir():
        return FrameFolderSource(path, fps=folder_fps)
    if not path.exists():
        raise VideoDecodeError(f"no such video file or frame folder: {path}")
    if not path.is_file():
        raise VideoDecodeError(f"{path} is neither a regular file nor a folder of frames")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"video file {path} is empty (0 bytes)")
    from model.video.pyav_source import PyAVSource  # imports this module

    return PyAVSource(path, fallback_fps=fallback_fps, max_pixels=max_pixels)
