"""File decoding speed: the PyAV source (timestamps, damage flags, size changes) against a bare OpenCV capture loop.

Run from the repository root::

    .venv/bin/python -m bench.decoders                    # the field inputs in ../shared/data/field
    .venv/bin/python -m bench.decoders clip.mp4 --rounds 5

Both decode every frame to RGB uint8 arrays in batches of 64, in the same process, alternating over `--rounds`
rounds; the median round is reported as frames/s and the PyAV/OpenCV ratio (above 1: PyAV is faster). OpenCV's
count can differ from PyAV's on damaged input: OpenCV drops the frames FFmpeg flags as corrupt, PyAV keeps them.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from model.video.pyav_source import PyAVSource

log = logging.getLogger("bench.decoders")
FIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "field"
BATCH = 64


def decode_opencv(path: Path) -> int:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = 0
    try:
        batch: list[np.ndarray] = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            batch.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if len(batch) == BATCH:
                frames += len(np.stack(batch))
                batch = []
        return frames + len(batch)
    finally:
        capture.release()


def decode_pyav(path: Path) -> int:
    frames = 0
    with PyAVSource(path) as source:
        while len(batch := source.read_frames(BATCH)):
            frames += len(batch)
    return frames


def measure(path: Path, rounds: int) -> dict[str, object]:
    times: dict[str, list[float]] = {"opencv": [], "pyav": []}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        for name, decode in (("opencv", decode_opencv), ("pyav", decode_pyav)):
            started = time.perf_counter()
            counts[name] = decode(path)
            times[name].append(time.perf_counter() - started)
    rates = {name: counts[name] / statistics.median(t) for name, t in times.items()}
    return {
        "file": path.name,
        "frames": counts,
        "frames_per_s": {k: round(v, 1) for k, v in rates.items()},
        "pyav_over_opencv": round(rates["pyav"] / rates["opencv"], 3) if rates["opencv"] else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path, help="files to decode (default: the field inputs)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    videos = args.videos or sorted(p for p in FIELD.glob("*") if p.suffix in {".mp4", ".ts", ".h264"})
    if not videos:
        parser.error(f"no videos given and none found in {FIELD}")
    results = [measure(path, args.rounds) for path in videos]
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
