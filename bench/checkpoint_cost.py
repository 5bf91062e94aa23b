"""What a shipped model costs to analyse footage, side by side in one run: `engine.analyze` real-time factor
per checkpoint and video, and each checkpoint's ratio to the first.

    .venv/bin/python -m bench.checkpoint_cost                         # default vs v3, ~2 minutes on 2 CPU cores
    .venv/bin/python -m bench.checkpoint_cost --checkpoints default,v3,ped2_motion --rounds 3 --device cuda

Videos: UCSD Ped2 test clip 01 (a 360x240 frame folder at 10 fps) and the longest 1280x720 30 fps surv-fight clip
(read in place from the shared data). Each engine is built once (model load not timed) and analyses every video
`--rounds` times, rounds interleaved across checkpoints so machine load hits them alike; the median is reported.
Real time = the video's duration / the seconds `analyze` took (decode, backbone, head and events: what `POST
/analyze` spends minus the HTTP upload). The in-process figure is the upper bound of the service's
(`bench.service_analyze` measures the service's overhead over it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import exporters.backends  # noqa: F401  (registers the accelerated runtimes, as the service has)
from model.inference import AnalysisEngine, EngineConfig

log = logging.getLogger("bench.checkpoint_cost")
SHARED = Path(
    os.environ.get("REFINEVAD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
VIDEOS = {
    "ped2_360x240_10fps": SHARED / "ped2" / "testing" / "frames" / "01",
    "surv_fight_1280x720_30fps": SHARED / "surv-fight" / "fight" / "fi068.mp4",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="default,v3", help="comma-separated names or paths")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    missing = [str(p) for p in VIDEOS.values() if not p.exists()]
    if missing:
        raise SystemExit(f"shared data missing: {missing} (set REFINEVAD_SHARED_DATA)")
    names = args.checkpoints.split(",")
    engines = {n: AnalysisEngine.from_config(EngineConfig(device=args.device, checkpoint=n)) for n in names}
    seconds: dict[tuple[str, str], list[float]] = {}
    durations: dict[str, float] = {}
    for engine in engines.values():  # warm-up: first-call allocations and caches are not timed
        engine.analyze(VIDEOS["ped2_360x240_10fps"])
    for r in range(args.rounds):
        for video, path in VIDEOS.items():
            for name, engine in engines.items():
                start = time.perf_counter()
                result = engine.analyze(path)
                seconds.setdefault((name, video), []).append(time.perf_counter() - start)
                durations[video] = float(result.video.duration_s)
        log.info("round %d of %d done", r + 1, args.rounds)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for video in VIDEOS:
        base = statistics.median(seconds[names[0], video])
        for name in names:
            median = statistics.median(seconds[name, video])
            report.setdefault(name, {})[video] = {
                "seconds": round(median, 3),
                "x_real_time": round(durations[video] / median, 2),
                f"cost_vs_{names[0]}": round(median / base, 3),
            }
            print(
                f"{name:>12} {video:>26}: {durations[video] / median:6.1f}x real time, "
                f"{median / base:5.2f}x the cost of {names[0]}"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"rounds": args.rounds, "device": args.device, "results": report}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
