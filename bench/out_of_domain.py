"""Out-of-domain check of a model: how much of some normal footage from cameras it never saw lights up.

A default model trained on one campus walkway must not call every other scene an anomaly. For each video this
prints the share of snippets whose score reaches the event threshold (`EventPolicy.enter_threshold`, 0.5), the
number of events `POST /analyze` would report (none for a scene the model's scene-familiarity check flags as
unlike its training footage, `model.scene_familiarity`), the scene distance, the peak score and the dominant
category of the high snippets.

The public clips used for the model card come from Debian's `opencv-doc` package (OpenCV's sample data, BSD
licence), fetched from the Debian archive and unpacked without installing::

    apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb /tmp/opencv-doc
    .venv/bin/python -m bench.out_of_domain /tmp/opencv-doc/usr/share/doc/opencv-doc/examples/data/{vtest,tree}.avi

`vtest.avi`: people walking through a hall, a fixed indoor camera (768x576, 10 fps, 795 frames); `tree.avi`: a
tree in the wind, fixed camera (320x240, 15 fps, 444 frames). Neither contains an anomaly in Ped2's sense.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

log = logging.getLogger("bench.out_of_domain")


def score_video(engine, path: Path) -> dict:
    result = engine.analyze(path)
    threshold = engine.config.events.enter_threshold
    scores = [s.score for s in result.snippets]
    high = [s for s in result.snippets if s.score >= threshold]
    dominant = Counter(max(s.categories, key=s.categories.get) for s in high)
    return {
        "video": path.name,
        "snippets": len(scores),
        "fraction_above_threshold": round(len(high) / len(scores), 4) if scores else None,
        "events": len(result.events),
        "scene_familiar": None if result.scene is None else result.scene.familiar,
        "scene_distance": None if result.scene is None else round(result.scene.distance, 4),
        "peak_score": round(max(scores), 4) if scores else None,
        "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
        "dominant_category_of_high_snippets": dict(dominant),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("videos", nargs="+", type=Path, help="normal videos from cameras the model never saw")
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    parser.add_argument("--out", type=Path, help="write the report as JSON here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from model.inference import AnalysisEngine, EngineConfig

    engine = AnalysisEngine.from_config(EngineConfig(device="cpu", checkpoint=args.checkpoint))
    rows = [score_video(engine, path) for path in args.videos]
    snippets = sum(r["snippets"] for r in rows)
    high = sum(round(r["fraction_above_threshold"] * r["snippets"]) for r in rows if r["snippets"])
    report = {
        "model": engine.identity.checkpoint,
        "backbone": engine.identity.backbone.key(),
        "threshold": engine.config.events.enter_threshold,
        "videos": rows,
        "fraction_above_threshold_all": round(high / snippets, 4) if snippets else None,
        "scene_threshold": engine.identity.scene_threshold,
        "videos_flagged_unfamiliar": sum(r["scene_familiar"] is False for r in rows),
        "events_all": sum(r["events"] for r in rows),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
