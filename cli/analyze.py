"""`refinevad analyze INPUT...`: scores, category distribution and events of videos and frame folders, in-process.

The model is loaded once for all inputs. One input prints its snippets, categories and events (as before); with
`--json-dir` every input's full result goes to `DIR/<name>.json` as soon as it is done, plus `DIR/summary.json`.
Several inputs print a summary table at the end instead. An input that cannot be read is reported and skipped.
Exit status: 0 when every input was analysed, 1 when some failed, 2 when all failed or the model cannot load.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from pydantic import BaseModel, Field

import exporters.backends  # noqa: F401  (registers the exported head backends with the engine)
from cli.analyze_inputs import SUMMARY_NAME, AnalysisInput, expand
from model.backbones.registry import BackboneName
from model.scene import SceneModel
from model.video.source import DEFAULT_FOLDER_FPS

if TYPE_CHECKING:
    from model.inference import AnalysisEngine, AnalysisResult

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyze video files, frame folders and folders of recordings with the model",
        description=__doc__.split("\n", 1)[1].strip() if __doc__ else None,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video file, folder of frames, folder of recordings (searched recursively for video files and "
        "frame folders), or file:// path",
    )
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
    p.add_argument(
        "--folder-fps",
        type=float,
        default=DEFAULT_FOLDER_FPS,
        help=f"frame rate of frame folders, frames/s (default {DEFAULT_FOLDER_FPS:g}, UCSD Ped2's)",
    )
    p.add_argument("--plot", type=Path, help="one input: write a PNG of the score timeline and category bars")
    p.add_argument(
        "--json", type=Path, dest="json_out", help="one input: write the full result as JSON ('-' = stdout)"
    )
    p.add_argument(
        "--json-dir",
        type=Path,
        help="write each input's full result to DIR/<name>.json (name: the file or folder name, with parent "
        "folders where needed to tell inputs apart) and the run's summary to DIR/summary.json",
    )
    p.add_argument("--frame-scores", action="store_true", help="include per-frame scores in the JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--camera",
        help="a live stream's id: score with that camera's scene model (scene_score and the fused score), read "
        "from the service's database (REFINEVAD_DATA_DIR / REFINEVAD_DATABASE_URL, or --data-dir)",
    )
    p.add_argument(
        "--data-dir", type=Path, help="the service's data directory, for --camera (default: its setting)"
    )
    p.set_defaults(func=run)


class InputOutcome(BaseModel):
    """One input's line of the summary (summary.json and the printed table)."""

    input: str
    name: str
    ok: bool
    error: str | None = None
    json_file: str | None = Field(None, description="the result's file in --json-dir")
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    snippets: int | None = None
    max_score: float | None = None
    events: int | None = None
    warnings: list[str] = Field(default_factory=list)
    seconds: float = Field(0.0, description="wall time of this input's analysis")


def _warnings(result: AnalysisResult) -> list[str]:
    found = []
    if result.untrained_warning:
        found.append("untrained model")
    if result.scene_warning:
        found.append("unfamiliar scene")
    if result.decode.truncated:
        found.append("truncated")
    degraded = sum(s.degraded for s in result.snippets)
    if degraded:
        found.append(f"{degraded} degraded snippets")
    return found


def _outcome(item: AnalysisInput, result: AnalysisResult, seconds: float) -> InputOutcome:
    return InputOutcome(
        input=item.uri,
        name=item.name,
        ok=True,
        frames=result.frames,
        width=result.video.width,
        height=result.video.height,
        fps=round(result.video.fps, 3),
        snippets=result.num_snippets,
        max_score=round(max(s.score for s in result.snippets), 4),
        events=len(result.events),
        warnings=_warnings(result),
        seconds=round(seconds, 3),
    )


def _check_arguments(args: argparse.Namespace, inputs: list[AnalysisInput]) -> str | None:
    if args.folder_fps <= 0 or args.folder_fps > 1000:
        return f"--folder-fps must be in (0, 1000] frames/s, not {args.folder_fps:g}"
    if len(inputs) > 1 and (args.json_out or args.plot):
        return (
            f"--json and --plot take one input, and {len(inputs)} were given (or found in folders): "
            "use --json-dir DIR for one JSON per input"
        )
    if args.json_dir is not None and args.json_dir.exists() and not args.json_dir.is_dir():
        return f"--json-dir {args.json_dir} exists and is not a folder"
    return None


def _build_engine(args: argparse.Namespace) -> AnalysisEngine:
    from model.events import EventPolicy
    from model.inference import AnalysisEngine, EngineConfig

    exit_threshold = args.exit_threshold if args.exit_threshold is not None else 0.8 * args.threshold
    config = EngineConfig(
        checkpoint=args.checkpoint,
        backbone=args.backbone,
        clip_checkpoint=args.clip_checkpoint,
        device=args.device,
        head_backend=args.head_backend,
        events=EventPolicy(enter_threshold=args.threshold, exit_threshold=exit_threshold),
        scene_check=args.scene_check,
        folder_fps=args.folder_fps,
    )
    return AnalysisEngine.from_config(config)


def run(args: argparse.Namespace) -> int:
    inputs = expand(args.inputs)
    problem = _check_arguments(args, inputs)
    if problem:
        log.error("%s", problem)
        return 2
    started = time.perf_counter()
    try:
        engine = _build_engine(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        log.error("cannot load the model: %s", exc)
        return 2
    camera = None
    if args.camera:
        try:
            camera = load_camera(args.camera, args.data_dir)
        except (ValueError, LookupError) as exc:
            log.error("cannot use camera %r: %s", args.camera, exc)
            return 2
    loaded_s = time.perf_counter() - started
    if args.json_dir is not None:
        args.json_dir.mkdir(parents=True, exist_ok=True)
    single = len(inputs) == 1
    kept: list[tuple[AnalysisInput, AnalysisResult]] = []

    def report(item: AnalysisInput, result: AnalysisResult) -> None:
        if single:
            kept.append((item, result))

    outcomes = _analyze_all(engine, inputs, args, report, camera)
    for item, result in kept:  # one input, as before: its full report (or its JSON on stdout)
        _print_or_write(args, item, result)
    ok = sum(o.ok for o in outcomes)
    if args.json_dir is not None:
        summary = {
            "model": engine.identity.model_dump(mode="json"),
            "succeeded": ok,
            "failed": len(outcomes) - ok,
            "model_load_s": round(loaded_s, 3),
            "inputs": [o.model_dump(mode="json") for o in outcomes],
        }
        (args.json_dir / f"{SUMMARY_NAME}.json").write_text(json.dumps(summary, indent=1))
    if not single:
        identity = engine.identity
        print(
            f"model: {identity.checkpoint} (trained: {identity.trained}) on backbone {identity.backbone.key()}"
        )
        print(_summary_table(outcomes))
        print(
            f"{ok} of {len(outcomes)} inputs analysed in {time.perf_counter() - started:.1f}s "
            f"(model loaded once, {loaded_s:.1f}s)"
            + (f"; results in {args.json_dir}" if args.json_dir else "")
        )
    if ok == len(outcomes):
        return 0
    return 1 if ok else 2


def load_camera(stream_id: str, data_dir: Path | None) -> SceneModel:
    """The stored scene model of a camera, as the service keeps it. Raises `LookupError` when it has none."""
    from service.scene.registry import scene_settings
    from service.scene.store import SceneStore
    from service.settings import ServiceSettings
    from service.storage import Database

    settings = ServiceSettings(**({"data_dir": data_dir} if data_dir is not None else {}))
    db = Database(settings.database_target)
    try:
        data = SceneStore(db).load(stream_id)
    finally:
        db.close()
    if data is None:
        raise LookupError(f"no scene model stored for {stream_id!r} in {settings.data_dir}")
    model = SceneModel.from_bytes(data, scene_settings(settings.scene_learn_s, settings.scene_max_mb))
    if model.state != "calibrated":
        log.warning(
            "camera %s is still learning (%.0f of %.0f s of footage): no scene scores",
            stream_id,
            model.footage_s,
            model.settings.learn_s,
        )
    return model


def _analyze_all(
    engine: AnalysisEngine,
    inputs: list[AnalysisInput],
    args: argparse.Namespace,
    report: Callable[[AnalysisInput, AnalysisResult], None],
    camera: SceneModel | None = None,
) -> list[InputOutcome]:
    """Every input in turn on the one engine, behind a progress bar (inputs done plus the current one's bytes);
    each result goes to `report` and, with --json-dir, to its file as soon as it is done. An input that cannot
    be read is logged and skipped."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from model.video.source import VideoDecodeError

    outcomes: list[InputOutcome] = []
    bar_format = "{l_bar}{bar}| {n:.1f}/{total} inputs [{elapsed}<{remaining}]"
    with (
        logging_redirect_tqdm(),
        tqdm(
            total=len(inputs), desc="analyze", bar_format=bar_format, disable=args.no_progress or None
        ) as bar,
    ):
        for done, item in enumerate(inputs):
            bar.set_postfix_str(item.name)

            def progress(fraction: float, done: int = done) -> None:
                bar.n = done + fraction
                bar.refresh()

            t0 = time.perf_counter()
            try:
                if item.error:
                    raise VideoDecodeError(item.error)
                result = engine.analyze(
                    item.uri,
                    progress=progress,
                    frame_scores=args.frame_scores,
                    camera=camera,
                    camera_id=args.camera,
                )
            except (VideoDecodeError, ValueError, OSError) as exc:
                log.error("skipped %s: %s", item.name, exc)
                outcomes.append(
                    InputOutcome(
                        input=item.uri,
                        name=item.name,
                        ok=False,
                        error=str(exc),
                        seconds=time.perf_counter() - t0,
                    )
                )
            else:
                outcome = _outcome(item, result, time.perf_counter() - t0)
                if args.json_dir is not None:
                    path = args.json_dir / f"{item.name}.json"
                    path.write_text(result.model_dump_json(indent=1))
                    outcome.json_file = path.name
                outcomes.append(outcome)
                report(item, result)
            bar.n = done + 1
            bar.refresh()
    return outcomes


def _summary_table(outcomes: list[InputOutcome]) -> str:
    """One line per input: what it is, how it scored, or why it failed."""
    header = ("input", "frames", "size", "fps", "snippets", "max score", "events", "seconds", "notes")
    rows = []
    for o in outcomes:
        if o.ok:
            rows.append(
                (
                    o.name,
                    str(o.frames),
                    f"{o.width}x{o.height}",
                    f"{o.fps:.2f}",
                    str(o.snippets),
                    f"{o.max_score:.3f}",
                    str(o.events),
                    f"{o.seconds:.1f}",
                    ", ".join(o.warnings),
                )
            )
        else:
            reason = (o.error or "").removeprefix(f"{o.input}: ")  # the row names the input already
            rows.append((o.name, "-", "-", "-", "-", "-", "-", f"{o.seconds:.1f}", f"FAILED: {reason}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:-1], widths[1:], strict=True)
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _print_or_write(args: argparse.Namespace, item: AnalysisInput, result: AnalysisResult) -> None:
    """One input's full report on stdout, its JSON and plot where asked."""
    if args.json_out and str(args.json_out) == "-":
        print(result.model_dump_json(indent=1))
        return
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
        + (f", turned {d.display_rotation} degrees upright" if d.display_rotation else "")
    )
    if d.truncated:
        print("WARNING: the video is truncated: it ends before the frames it announces")
    print("snippet  start_s   end_s     frames  score  top category")
    for s in result.snippets:
        top = max(s.categories, key=s.categories.get)
        flag = "  DEGRADED (damaged or lost frames)" if s.degraded else ""
        frames = f"{s.start_frame}-{s.end_frame}"
        print(
            f"{s.index:7d} {s.start_s:7.2f} {s.end_s:7.2f} {frames:>10}  {s.score:.3f}  {top} "
            f"({s.categories[top]:.2f}){flag}"
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

        plot_analysis(result, args.plot, title=Path(item.uri).name)
        print(f"wrote {args.plot}")
