"""Event snapshots of an analysed file (`POST /analyze?snapshots=true`): for each event, the frame in the middle of
its highest-scoring snippet, read back from the uploaded file with OpenCV and encoded as JPEG (at most
`max_width` pixels wide)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import cv2
import numpy as np

from model.inference import AnalysisResult
from service.schemas import EventSnapshot

logger = logging.getLogger(__name__)

MAX_SNAPSHOTS = 100
JPEG_QUALITY = 85


def event_snapshots(
    path: Path, result: AnalysisResult, frames_per_snippet: int, max_width: int = 640
) -> list[EventSnapshot]:
    """One snapshot per event (the first `MAX_SNAPSHOTS`); an event whose frame cannot be read is skipped (logged).
    Raises OSError when the file cannot be opened at all."""
    if not result.events:
        return []
    scores = np.array([s.score for s in result.snippets], dtype=np.float64)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"cannot open {path.name} to take event snapshots")
    fps = result.video.fps or 1.0
    snapshots = []
    try:
        for n, event in enumerate(result.events[:MAX_SNAPSHOTS]):
            window = scores[event.start_snippet : max(event.end_snippet, event.start_snippet + 1)]
            peak = event.start_snippet + int(np.argmax(window))
            frame_index = min(peak * frames_per_snippet + frames_per_snippet // 2, max(0, result.frames - 1))
            capture.set(cv2.CAP_PROP_POS_FRAMES, frame_index)
            ok, bgr = capture.read()
            if not ok or bgr is None:
                logger.warning(
                    "%s: frame %d of event %d could not be read for its snapshot", path.name, frame_index, n
                )
                continue
            h, w = bgr.shape[:2]
            if w > max_width:
                bgr = cv2.resize(bgr, (max_width, round(h * max_width / w)), interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                continue
            snapshots.append(
                EventSnapshot(
                    event=n,
                    peak_s=round(frame_index / fps, 3),
                    frame=frame_index,
                    width=bgr.shape[1],
                    height=bgr.shape[0],
                    jpeg_base64=base64.b64encode(data.tobytes()).decode("ascii"),
                )
            )
    finally:
        capture.release()
    return snapshots
