"""`refinevad analyze VIDEO`: scores, category distribution and events of one video, in-process."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import get_args

import exporters.backends  # noqa: F401  (registers the exported head backends with the engine)
from model.backbones.registry import BackboneName

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyze a video file or frame folder with the model")
    p.add_argument("video", help="video file, folder of frames, or file:// path")
    p.add_argument(
        "--checkpoint", type=Path, help="trained head file or shipped model name (default, ped2_motion)"
    )
    p.add_argument(
        "--backbone", choices=list(get_args(BackboneName)), help="default: the checkpoint's backbone"
    )
    p.add_argument("--clip-checkpoint", type=Path, help="local CLIP weights file")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument(
        "--head-backend",
        choices=["torch", "torchscript", "onnx", "onnx-tensorrt", "cuda-graph"],
        default="torch",
        help="how the head runs (anything but torch only after matching it at start-up)",
    )
    p.add_argument("--threshold", type=float, default=0.5, help="event enter threshold")
    p.add_argument(
        "--exit-threshold", type=float, default=None, help="event exit threshold (default: 0.8 x enter)"
    )
    p.add_argument(
        "--scene-check",
        choices=("withhold_events", "report", "off"),
        default="withhold_events",
        help="footage unlike the model's training footage: raise no events from it (default), only flag it, "
        "or do not check",
    )
    p.add_argument("--plot", type=Path, help="write a PNG of the score timeline and category bars")
    p.add_argument("--json", type=Path, dest="json_out", help="write the full result as JSON ('-' = stdout)")
    p.add_argument("--frame-scores", action="store_true", help="include per-frame scores in the JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.events import EventPolicy
    from model.inference import AnalysisEngine, EngineConfig
    from model.video.source import VideoDecodeError

    exit_threshold = args.exit_threshold if args.exit_threshold is not None else 0.8 * args.threshold
    config = EngineConfig(
        checkpoint=args.checkpoint,
        backbone=args.backbone,
        clip_checkpoint=args.clip_checkpoint,
        device=args.device,
        head_backend=args.head_backend,
        events=EventPolicy(enter_threshold=args.threshold, exit_threshold=exit_threshold),
        scene_check=args.scene_check,
    )
    try:
        engine = AnalysisEngine.from_config(config)
        result = engine.analyze(args.video, frame_scores=args.frame_scores)
    except (VideoDecodeError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    if args.json_out and str(args.json_out) == "-":
        print(result.model_dump_json(indent=1))
        return 0
    model = result.model
    print(f"model: {model.checkpoint} (trained: {model.trained}) on backbone {model.backbone.key()}")
    if result.untrained_warning:
        print(f"WARNING: {result.untrained_warning}")
    if result.scene_warning:
        print(f"WARNING: {result.scene_warning}")
    print(
        f"video: {result.frames} frames at {result.video.fps:.2f} fps, {result.video.width}x{result.video.height}, "
        f"{result.num_snippets} snippets"
    )
    d = result.decode
    print(
        f"decode: {d.frames_decoded} frames decoded of {d.frames_announced or 'unknown'} announced, "
        f"{d.decode_errors} damaged or lost, "
        + (f"{d.repeated_frames} coded as repeats, " if d.repeated_frames else "")
        + f"{len(d.geometry_changes)} size changes, "
        f"{len(d.timestamp_jumps)} timestamp jumps, timed by {d.clock.replace('_', ' ')}"
    )
    if d.truncated:
        print("WARNING: the video is truncated: it ends before the frames it announces")
    print("snippet  start_s   end_s  score  top category")
    for s in result.snippets:
        top = max(s.categories, key=s.categories.get)
        flag = "  DEGRADED (damaged or lost frames)" if s.degraded else ""
        print(
            f"{s.index:7d} {s.start_s:7.2f} {s.end_s:7.2f}  {s.score:.3f}  {top} ({s.categories[top]:.2f}){flag}"
        )
    print("video category distribution:")
    for name, value in sorted(result.video_categories.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<16} {value:.3f}")
    print(f"events ({len(result.events)}):")
    for e in result.events:
        print(
            f"  {e.start_s:7.2f}s - {e.end_s:7.2f}s  peak {e.peak_score:.3f}  mean {e.mean_score:.3f}  "
            f"{e.dominant_category}"
        )
    if args.json_out:
        args.json_out.write_text(result.model_dump_json(indent=1))
        print(f"wrote {args.json_out}")
    if args.plot:
        from model.timeline_plot import plot_analysis

        plot_analysis(result, args.plot, title=Path(args.video).name)
        print(f"wrote {args.plot}")
    return 0
