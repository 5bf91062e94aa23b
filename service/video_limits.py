"""Frame-size limit checked from the container's header, before a single frame is decoded.

A video a few hundred KB in size can hold frames of 16000x16000 pixels: decoding just the first one takes gigabytes
and seconds. The engine's own limit check runs after it has decoded the first frame, so the service reads the
frame size that the demuxer reports (no decoding) and refuses an oversized video first.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from model.video.source import VideoDecodeError


def check_frame_size(path: Path, max_pixels: int) -> None:
    """Raise `VideoDecodeError` when the container declares frames larger than `max_pixels`."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            return  # the engine's probe reports why the file cannot be read
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    if width * height > max_pixels:
        raise VideoDecodeError(
            f"video frames are {width}x{height}, larger than the limit of {max_pixels} pixels per frame"
        )
