"""Encoding of event media: JPEG snapshots with OpenCV, MP4 clips with PyAV (FFmpeg's libraries).

Clips use H.264 (`libx264`, else FFmpeg's other H.264 encoders) when PyAV's FFmpeg has one, so every browser plays
them; otherwise MPEG-4 Part 2, which some browsers cannot play (logged once at start-up). The MP4 is written with
`+faststart` (index first), so a browser can start playing and seeking before it has the whole file.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Preference order: H.264 first (plays in every browser), MPEG-4 Part 2 as the last resort.
CLIP_CODECS = ("libx264", "h264", "libopenh264", "h264_v4l2m2m", "mpeg4")
JPEG_QUALITY = 85
TIME_BASE = Fraction(1, 1000)  # clip timestamps in milliseconds of media time


class EncodingError(RuntimeError):
    """A snapshot or clip could not be encoded (no usable encoder, or the encoder failed)."""


@cache
def clip_codec() -> str:
    """The best video encoder PyAV's FFmpeg really has (tried by opening it, not just by name)."""
    for name in CLIP_CODECS:
        try:
            codec = av.codec.Codec(name, "w")
            ctx = av.codec.CodecContext.create(codec)
            ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 64, 64, "yuv420p", Fraction(1, 10)
            ctx.open()
        except Exception:
            continue
        if name == "mpeg4":
            logger.warning(
                "no H.264 encoder in PyAV's FFmpeg: event clips are MPEG-4 Part 2 (not all browsers play it)"
            )
        return name
    raise EncodingError(f"none of the video encoders {', '.join(CLIP_CODECS)} is available in PyAV's FFmpeg")


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of one `[H, W, 3]` uint8 RGB frame."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise EncodingError("OpenCV could not encode the frame as JPEG")
    return data.tobytes()


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ClipEncoder:
    """An MP4 being written frame batch by frame batch; frames carry their media time, so gaps stay gaps.

    `path` is written as given (callers write to a temporary name and rename on `close`). Frames are `[N, H, W, 3]`
    uint8 RGB with even H and W; every batch must have the size of the first (others are skipped and counted).
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, crf: int = 28) -> None:
        self.path = path
        self.width, self.height = width, height
        self.codec = clip_codec()
        self.frames = 0
        self.skipped = 0
        self._last_pts = -1
        self._container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        try:
            rate = Fraction(fps).limit_denominator(1001)
            options = {"preset": "veryfast", "crf": str(crf)} if self.codec == "libx264" else {}
            # One thread: small clips encode fast enough in the media thread, and an open clip must not add
            # encoder threads (and their buffers) to the process for as long as its event lasts.
            options["threads"] = "1"
            self._stream = self._container.add_stream(self.codec, rate=rate, options=options)
            self._stream.codec_context.thread_count = 1
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = TIME_BASE
            self._stream.time_base = TIME_BASE
        except Exception:
            self._container.close()
            raise

    def write(self, times_s: np.ndarray, frames: np.ndarray) -> None:
        """Append frames with their media times (seconds, increasing)."""
        if frames.shape[1:3] != (self.height, self.width):
            self.skipped += len(frames)
            return
        pts = np.round(np.asarray(times_s, dtype=np.float64) * TIME_BASE.denominator).astype(np.int64)
        # One encoder call per frame is the encoder's interface; the frames themselves are not touched in Python.
        for t, frame in zip(pts.tolist(), frames, strict=True):
            if t <= self._last_pts:
                continue
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = t, TIME_BASE
            self._container.mux(self._stream.encode(video_frame))
            self._last_pts = t
            self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (the MP4 index is written here)."""
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:
            logger.debug("closing an aborted clip failed", exc_info=True)
        self.path.unlink(missing_ok=True)
