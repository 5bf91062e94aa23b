"""Real test footage for everyone's tests: UCSD Ped2 frames (read in place) encoded to a video file."""

from __future__ import annotations

from pathlib import Path

import cv2

from tests.shared_data import PED2_ROOT

__all__ = ["PED2_ROOT", "encode_ped2_clip", "ped2_frame_files"]


def ped2_frame_files(clip: str = "testing/frames/01", max_frames: int | None = None) -> list[Path]:
    folder = PED2_ROOT / clip
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no Ped2 frames under {folder}")
    return files[:max_frames] if max_frames is not None else files


def encode_ped2_clip(
    dest: Path,
    clip: str = "testing/frames/01",
    max_frames: int | None = None,
    fps: float = 10.0,
    codec: str = "mp4v",
) -> Path:
    """Write the frames of one Ped2 clip to a video file at `dest` (e.g. tmp_path / "clip.mp4")."""
    files = ped2_frame_files(clip, max_frames)
    first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    height, width = first.shape[:2]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {dest} with codec {codec!r}")
    try:
        for path in files:
            writer.write(cv2.imread(str(path), cv2.IMREAD_COLOR))
    finally:
        writer.release()
    return dest
