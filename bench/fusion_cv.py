"""How the head's score and a camera's scene score are fused (model.scene.fusion), chosen on cameras the head never
saw: surv-fight's real CCTV sources, grouped by source.

Run from the repository root::

    .venv/bin/python -m bench.fusion_cv                 # ~10 minutes on a 2-core CPU

Protocol (no test split is read; surv-fight is not in the default model's training data):

- every surv-fight source with >= 4 noFight clips is one camera. Its scene model learns the first half of its
  noFight clips (in `clips.csv` order); the rest of its noFight clips and all its fight clips are scored;
- each scored snippet gets the shipped default's head score, its familiarity verdict (`AnalysisEngine.head_trusted`)
  and the source's `scene_score`, computed exactly as `POST /analyze?camera=` does;
- each rule fuses them; a clip's score is its highest snippet's. Rows: clip AUC of fight against noFight clips,
  pooled over the sources that have both (sklearn `roc_auc_score`), the share of fight clips at or above 0.5 (the
  event threshold), and the false-alarm share of scored noFight snippets at or above 0.5.

Rules: `head` (no scene model), `scene` (scene score alone), `max` / `mean` (always both), `gated-max` /
`gated-mean` (`fuse`: the scene score alone where the head's familiarity check says the view is not its training
footage, else max / mean). Writes `bench/reports/fusion_cv.json`.
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

import numpy as np
from sklearn.metrics import roc_auc_score

import exporters.backends  # noqa: F401  (registers the accelerated runtimes, as the service has)
from model.inference import AnalysisEngine, EngineConfig
from model.scene import SceneModel, SceneSettings
from model.scene.fusion import fuse

log = logging.getLogger("bench.fusion_cv")
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REFINEVAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MIN_NORMAL_CLIPS = 4
THRESHOLD = 0.5
RULES = ("head", "scene", "max", "mean", "gated-max", "gated-mean")


def fused(rule: str, head: np.ndarray, scene: np.ndarray, trusted: np.ndarray) -> np.ndarray:
    """`[S]` scores of one rule from head scores, scene scores and the head's familiarity, all `[S]`."""
    if rule == "head":
        return head
    if rule == "scene":
        return scene
    if rule in ("max", "mean"):
        return fuse(head, scene, None, rule=rule)
    return fuse(head, scene, trusted, rule="max" if rule == "gated-max" else "mean")


def sources(root: Path) -> dict[str, dict[int, list[Path]]]:
    """surv-fight's clips by source and label (1 fight, 0 noFight), in `clips.csv` order."""
    found: dict[str, dict[int, list[Path]]] = defaultdict(lambda: {0: [], 1: []})
    with (root / "clips.csv").open() as f:
        for row in csv.DictReader(f):
            found[row["source"]][int(row["fight"])].append(root / row["file"])
    return {s: v for s, v in found.items() if len(v[0]) >= MIN_NORMAL_CLIPS}


def score_clip(engine: AnalysisEngine, scene: SceneModel, path: Path) -> dict[str, np.ndarray]:
    """Head scores, scene scores and the head's familiarity of a clip's snippets, as `analyze(camera=)` has."""
    encoded = engine.encode(path, describe_scene=True)
    assert encoded.regions is not None and engine.scene is not None
    head = engine.run_head(encoded.features).scores.float().cpu().numpy().astype(np.float64)
    _, familiar = engine.scene.check_video(encoded.features)
    trusted = np.asarray(engine.head_trusted(familiar), bool)
    return {"head": head, "scene": scene.score(encoded.regions).astype(np.float64), "trusted": trusted}


def run(root: Path, checkpoint: str | None) -> dict:
    engine = AnalysisEngine.from_config(EngineConfig(device="cpu", checkpoint=checkpoint))
    settings = SceneSettings(learn_s=1.0)  # calibrated on whatever half of the normal clips there is
    clips: list[tuple[str, int, dict[str, np.ndarray]]] = []
    learned_s: dict[str, float] = {}
    for source, by_label in sources(root).items():
        normal = by_label[0]
        half = len(normal) // 2
        scene = SceneModel(settings)
        for path in normal[:half]:
            encoded = engine.encode(path, describe_scene=True)
            assert encoded.regions is not None
            seconds = encoded.info.duration_s or len(encoded.regions) * 16 / encoded.info.fps
            scene.learn(encoded.regions, seconds)
        learned_s[source] = round(scene.status().footage_s, 1)
        for label, paths in ((0, normal[half:]), (1, by_label[1])):
            for path in paths:
                clips.append((source, label, score_clip(engine, scene, path)))
        log.info("source %s: learned %.1f s, scored %d clips", source, learned_s[source], len(clips))
    with_both = {s for s, label, _ in clips if label == 1} & {s for s, label, _ in clips if label == 0}
    rows = {}
    for rule in RULES:
        clip_scores, labels, normal_snippets, fights_flagged = [], [], [], []
        for source, label, parts in clips:
            scores = fused(rule, parts["head"], parts["scene"], parts["trusted"])
            if label == 0:
                normal_snippets.append(scores)
            else:
                fights_flagged.append(scores.max() >= THRESHOLD)
            if source in with_both:
                clip_scores.append(scores.max())
                labels.append(label)
        normal_all = np.concatenate(normal_snippets)
        rows[rule] = {
            "clip_auc": round(float(roc_auc_score(labels, clip_scores)), 3),
            "fights_flagged": round(float(np.mean(fights_flagged)), 3),
            "false_alarm_snippets": round(float(np.mean(normal_all >= THRESHOLD)), 3),
        }
        log.info("%-10s %s", rule, rows[rule])
    trusted_share = float(np.mean(np.concatenate([p["trusted"] for _, _, p in clips])))
    return {
        "protocol": __doc__.split("Protocol")[1].split("Rules:")[0].strip(),
        "checkpoint": checkpoint or "default",
        "sources": len(learned_s),
        "sources_with_fights_and_normals": len(with_both),
        "scored_clips": {"fight": sum(c[1] for c in clips), "noFight": sum(1 - c[1] for c in clips)},
        "learned_footage_s": learned_s,
        "head_trusted_share_of_snippets": round(trusted_share, 3),
        "rules": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="head to fuse (default: the shipped default)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "reports" / "fusion_cv.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    report = run(SHARED_DATA / "surv-fight", args.checkpoint)
    report["wall_s"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["rules"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
