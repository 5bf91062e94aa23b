"""The scene model's selection protocol (issue 25): source-grouped cross-validation on training footage only, and,
with `--final`, the test figures.

Run from the repository root::

    .venv/bin/python -m bench.scene_cv                       # CV rows, ~2 minutes on a 2-core CPU
    .venv/bin/python -m bench.scene_cv --final               # and the test figures (report every one you look at)
    .venv/bin/python -m bench.scene_cv --settings '{"margin": 2.0}'

CV rows (what candidates are chosen by; no test clip's frame labels are read):

- Ped2 weak snippet AUC: `ped2/wvad_split.json`'s train part. 4 folds over its 12 normal training clips (fold i =
  clips i, i+4, i+8); the bank learns the other 9, and scores the held-out 3 (label 0) and the split's 6 anomalous
  training clips (every snippet labelled 1, the clip's weak label). Snippets pooled over folds.
- false alarms (share of normal snippets at `scene_score` >= 0.5): Ped2's held-out normal clips above; Ped1's
  normal clip (frames 1-100 learned, 101-200 scored); every surv-fight source with >= 4 noFight clips, its clips'
  full snippets concatenated in `clips.csv` order, the first half learned and the second half scored. "other
  cameras" pools Ped1 and surv-fight.

Final (`--final`, test footage): the bank learns Ped2's 16 training clips and scores its 12 testing clips (snippet
scores repeated 16x to frames, pooled, against `test_frame_labels.json`); Ped1: learned on `normal/scene01`,
scoring `testing/Test001`. Snippets are 16 consecutive decoded frames as the service cuts them (a trailing partial
snippet padded with its last frame; the false-alarm sets keep full snippets only).

Shared data: `../shared/data` beside the checkout or `REFINEVAD_SHARED_DATA` (read in place).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import av
import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from model.scene import SceneDescriptor, SceneModel, SceneSettings

log = logging.getLogger("bench.scene_cv")
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REFINEVAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
FRAMES = 16
FOLDS = 4
MIN_SOURCE_CLIPS = 4
THRESHOLD = 0.5


def read_folder(folder: Path) -> np.ndarray:
    """A folder of .jpg/.tif frames, sorted by name -> `[N, H, W, 3]` uint8 RGB. Raises `FileNotFoundError`."""
    files = sorted([*folder.glob("*.jpg"), *folder.glob("*.tif")])
    if not files:
        raise FileNotFoundError(f"no frames in {folder}")
    return np.stack([cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in files])


def read_video(path: Path) -> np.ndarray:
    """Every decoded frame of a video (PyAV) -> `[N, H, W, 3]` uint8 RGB."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def snippets(frames: np.ndarray, full_only: bool = False) -> np.ndarray:
    """`[N, H, W, 3]` -> `[T, 16, H, W, 3]`: the service's cut (tail padded), or full snippets only."""
    n = len(frames)
    if full_only:
        t = n // FRAMES
        return frames[: t * FRAMES].reshape(t, FRAMES, *frames.shape[1:])
    t = -(-n // FRAMES)
    padded = np.concatenate([frames, np.repeat(frames[-1:], t * FRAMES - n, axis=0)])
    return padded.reshape(t, FRAMES, *frames.shape[1:])


class Described:
    """Region descriptors of every clip the protocol uses, computed once; times the descriptor."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.descriptor = SceneDescriptor()
        self.seconds: dict[str, float] = defaultdict(float)  # by frame size "WxH"
        self.snippets: dict[str, int] = defaultdict(int)
        self.clips: dict[str, np.ndarray] = {}

    def _describe(self, x: np.ndarray) -> np.ndarray:
        size = f"{x.shape[3]}x{x.shape[2]}"
        start = time.perf_counter()
        out = self.descriptor.describe(x)
        self.seconds[size] += time.perf_counter() - start
        self.snippets[size] += len(x)
        return out

    def folder(self, rel: str, part: slice = slice(None), full_only: bool = False) -> np.ndarray:
        key = f"{rel}[{part.start}:{part.stop}]{'full' if full_only else ''}"
        if key not in self.clips:
            self.clips[key] = self._describe(snippets(read_folder(self.root / rel)[part], full_only))
        return self.clips[key]

    def video(self, rel: str) -> np.ndarray:
        if rel not in self.clips:
            self.clips[rel] = self._describe(snippets(read_video(self.root / rel), full_only=True))
        return self.clips[rel]


def fit(parts: list[np.ndarray], settings: dict) -> SceneModel:
    """A scene model that learned `parts` (`[S, R, d]` each, 16 frames at 10 fps = 1.6 s per snippet)."""
    model = SceneModel(SceneSettings(learn_s=1e9, **settings))
    for part in parts:
        model.learn(part, len(part) * 1.6)
    model._calibrate_first()  # learn_s is never reached: calibrate on exactly these clips
    return model


def alarm_rate(scores: np.ndarray) -> float:
    return float(np.mean(scores >= THRESHOLD)) if len(scores) else float("nan")


def cross_validate(data: Described, settings: dict) -> dict[str, float | dict]:
    """The CV rows (module docstring)."""
    split = json.loads((data.root / "ped2" / "wvad_split.json").read_text())
    normal = [f"ped2/{p}" for p in split["train"]["normal"]]
    anomalous = [f"ped2/{p}" for p in split["train"]["anomalous"]]
    held, anomal = [], []
    for i in range(FOLDS):
        fold = normal[i::FOLDS]
        model = fit([data.folder(c) for c in normal if c not in fold], settings)
        held += [model.score(data.folder(c)) for c in fold]
        anomal += [model.score(data.folder(c)) for c in anomalous]
    n, a = np.concatenate(held), np.concatenate(anomal)
    auc = roc_auc_score(np.r_[np.zeros(len(n)), np.ones(len(a))], np.r_[n, a])
    ped1 = "ped1/normal/scene01"
    model = fit([data.folder(ped1, slice(0, 100), full_only=True)], settings)
    others = {"ped1": model.score(data.folder(ped1, slice(100, 200), full_only=True))}
    by_source: dict[str, list[str]] = defaultdict(list)
    with (data.root / "surv-fight" / "clips.csv").open() as f:
        for row in csv.DictReader(f):
            if row["fight"] == "0":
                by_source[row["source"]].append(f"surv-fight/{row['file']}")
    for source, clips in by_source.items():
        if len(clips) < MIN_SOURCE_CLIPS:
            continue
        x = np.concatenate([data.video(c) for c in clips])
        half = len(x) // 2
        others[source] = fit([x[:half]], settings).score(x[half:])
    pooled = np.concatenate(list(others.values()))
    return {
        "cv_weak_snippet_auc": round(float(auc), 4),
        "fa_ped2_held_out": round(alarm_rate(n), 4),
        "fa_other_cameras": round(alarm_rate(pooled), 4),
        "fa_ped1": round(alarm_rate(others["ped1"]), 4),
        "fa_by_source": {k: f"{int((v >= THRESHOLD).sum())}/{len(v)}" for k, v in others.items()},
    }


def final(data: Described, settings: dict) -> dict[str, float]:
    """The test figures (module docstring): frame AUC of `scene_score` alone."""
    ped2 = data.root / "ped2"
    labels = json.loads((ped2 / "test_frame_labels.json").read_text())["frames"]
    training = sorted(p.name for p in (ped2 / "training" / "frames").iterdir() if p.is_dir())
    model = fit([data.folder(f"ped2/training/frames/{c}") for c in training], settings)
    ys, ss = [], []
    for clip in sorted(labels):
        y = np.asarray(labels[clip])
        ys.append(y)
        ss.append(np.repeat(model.score(data.folder(f"ped2/testing/frames/{clip}")), FRAMES)[: len(y)])
    ped2_auc = roc_auc_score(np.concatenate(ys), np.concatenate(ss))
    y1 = np.asarray(json.loads((data.root / "ped1" / "test_frame_labels.json").read_text())["Test001"])
    model = fit([data.folder("ped1/normal/scene01")], settings)
    s1 = np.repeat(model.score(data.folder("ped1/testing/Test001")), FRAMES)[: len(y1)]
    return {
        "ped2_one_class_frame_auc": round(float(ped2_auc), 4),
        "ped1_test001_frame_auc": round(float(roc_auc_score(y1, s1)), 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--final", action="store_true", help="also print the test figures")
    parser.add_argument("--settings", default="{}", help="SceneSettings overrides as JSON (a candidate)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = json.loads(args.settings)
    SceneSettings(**settings)  # a bad candidate fails here, before minutes of describing
    data = Described(args.data)
    rows: dict = {"descriptor": data.descriptor.version, "settings": settings}
    rows |= cross_validate(data, settings)
    if args.final:
        rows |= final(data, settings)
    # Wall time, so a loaded machine reads slower; Ped2 and surv-fight's 360x240 clips are the service's size.
    rows["describe_ms_per_snippet"] = {
        size: round(1000 * data.seconds[size] / data.snippets[size], 1)
        for size in sorted(data.snippets, key=lambda k: -data.snippets[k])[:3]
    }
    log.info(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
