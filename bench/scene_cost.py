"""What a camera's scene model costs: `engine.analyze` of the same video with and without `camera=` (a
calibrated scene model), measured side by side in one run, and the memory of one hour of footage in a bank.

Run from the repository root::

    .venv/bin/python -m bench.scene_cost                 # ~2 minutes on a 2-core CPU
    .venv/bin/python -m bench.scene_cost --rounds 5 --size 1280x720

The video is UCSD Ped2 test clip 01 (180 frames, 360x240, 10 fps) played `--repeats` times (optionally resized to
`--size`), encoded to mp4. The camera is calibrated on Ped2 training clip 01. Rounds alternate plain and scene runs;
medians and minima are reported, the ratio is scene / plain seconds (goal: <= 1.10). The memory line fills a bank
with one hour of 10 fps footage (2250 snippets of 16 frames) of real Ped2 descriptors, repeated, and reports its
bytes (goal: <= 50 MB).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from model.inference import AnalysisEngine
from model.scene import SceneModel, SceneSettings
from service.model_service import engine_config
from service.settings import ServiceSettings

log = logging.getLogger("bench.scene_cost")
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REFINEVAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PED2 = SHARED_DATA / "ped2"


def encode(dest: Path, frames_dir: Path, repeats: int, size: tuple[int, int] | None) -> Path:
    frames = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in sorted(frames_dir.glob("*.jpg"))] * repeats
    if size is not None:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="times the clip is played in the video")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT to resize the footage to (e.g. 1280x720)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    engine = AnalysisEngine.from_config(engine_config(ServiceSettings(device=args.device)))
    with tempfile.TemporaryDirectory() as tmp:
        video = encode(Path(tmp) / "test.mp4", PED2 / "testing" / "frames" / "01", args.repeats, size)
        normal = encode(Path(tmp) / "normal.mp4", PED2 / "training" / "frames" / "01", 1, size)
        regions = engine.encode(normal, describe_scene=True).regions
        assert regions is not None
        camera = SceneModel(SceneSettings(learn_s=1.0))
        camera.learn(regions, len(regions) * 1.6)
        engine.analyze(video)  # warm-up
        plain, scene = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            engine.analyze(video)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = engine.analyze(video, camera=camera)
            scene.append(time.perf_counter() - t0)
        describe_s = result.timings.get("scene_s", 0.0)
    load = os.getloadavg()[0]
    duration = result.video.duration_s or 0.0
    print(f"video: {result.video.width}x{result.video.height}, {result.frames} frames, {duration:.1f} s")
    print(f"plain analyze: median {statistics.median(plain):.3f} s, min {min(plain):.3f} s")
    print(f"with scene model: median {statistics.median(scene):.3f} s, min {min(scene):.3f} s")
    print(
        f"  of which waiting for region descriptors after the backbone {describe_s:.3f} s (they are made beside "
        "it), bank search and fusion the rest"
    )
    print(
        f"ratio scene / plain: median {statistics.median(scene) / statistics.median(plain):.3f}, "
        f"min {min(scene) / min(plain):.3f} (load average {load:.1f})"
    )
    print(f"real-time factor with scene model: {duration / min(scene):.1f}x")
    hour = SceneModel(SceneSettings(learn_s=1.0))
    snippets = 2250
    reps = -(-snippets // len(regions))
    hour.learn(np.concatenate([regions] * reps)[:snippets], 3600.0)
    status = hour.status()
    print(
        f"bank for one hour of 10 fps footage: {status.bank_vectors} vectors, "
        f"{status.bank_bytes / 1e6:.1f} MB in memory, {len(hour.to_bytes()) / 1e6:.1f} MB stored"
    )


if __name__ == "__main__":
    main()
