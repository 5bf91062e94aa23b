"""`refinevad extract`: snippet features of videos or of the Ped2 dataset into feature stores.

The backbone takes the path the service takes (`model.acceleration.check_backbone` with the service's default
policy): a reduced-precision (fp16 on CUDA) or runtime-computed backbone (ONNX Runtime for the EfficientNet-Lite0
appearance network on CPUs) extracts only after its features matched the eager fp32 reference at start-up, so
stored features are the ones the service computes at serving time. `--eager` extracts with the eager fp32
reference itself.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import exporters.appearance_onnx  # noqa: F401  (registers the ONNX Runtime backbone runtime, as the service has)
from model.acceleration import AccelerationPolicy, check_backbone
from model.backbones.registry import BackboneConfig, load_backbone
from model.extraction import ExtractionReport, VideoInput, extract_to_store
from model.video.snippets import SnippetSpec
from model.video.source import DEFAULT_FOLDER_FPS

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract snippet features into a feature store",
        description=(
            "Decode videos (files or frame folders), cut them into snippets and store one feature vector per "
            "snippet. Resumable: videos already in the output store are skipped. Unreadable videos are "
            "skipped and listed at the end (exit status 1 when any failed)."
        ),
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--videos", nargs="+", metavar="PATH", help="video files or frame folders")
    what.add_argument("--dataset", choices=["ped2"], help="a known dataset layout")
    parser.add_argument("--root", type=Path, help="dataset root (for --dataset), e.g. ../shared/data/ped2")
    parser.add_argument("--out", type=Path, required=True, help="output store (ped2: OUT/train and OUT/test)")
    parser.add_argument("--label", type=int, choices=[0, 1], default=0, help="video-level label for --videos")
    parser.add_argument("--category", help="anomaly category for --videos with --label 1")

    bb = parser.add_argument_group("backbone")
    defaults = BackboneConfig.model_fields
    bb.add_argument(
        "--backbone",
        choices=["motion", "clip", "efficientnet_lite0", "two_stream"],
        default=defaults["name"].default,
    )
    bb.add_argument(
        "--appearance-size",
        type=int,
        default=defaults["appearance_size"].default,
        help="efficientnet_lite0 / two_stream: shorter side of the frame fed to the network (px)",
    )
    bb.add_argument(
        "--appearance-frames",
        type=int,
        default=defaults["appearance_frames"].default,
        help="efficientnet_lite0 / two_stream: frames encoded per snippet (evenly spaced)",
    )
    bb.add_argument(
        "--appearance-pooling",
        choices=["avg", "max", "gem", "grid2"],
        default=defaults["appearance_pooling"].default,
        help="efficientnet_lite0 / two_stream: spatial pooling of the feature map",
    )
    bb.add_argument(
        "--appearance-layer",
        choices=["head", "blocks"],
        default=defaults["appearance_layer"].default,
        help="efficientnet_lite0 / two_stream: head = 1280 channels after the head conv, blocks = 320 before it",
    )
    bb.add_argument("--clip-arch", default=defaults["clip_arch"].default)
    bb.add_argument(
        "--clip-pretrained",
        default=defaults["clip_pretrained"].default,
        help="open_clip pretrained tag; 'none' for random weights (benchmarks only)",
    )
    bb.add_argument("--clip-checkpoint", type=Path, help="local open_clip checkpoint file (works offline)")
    bb.add_argument("--cache-dir", type=Path, help="open_clip download cache")
    bb.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="auto: fp16 on CUDA, fp32 on CPUs; a reduced precision serves only if it matches fp32 at start-up",
    )
    bb.add_argument(
        "--eager",
        action="store_true",
        help="extract with the eager fp32 reference (no reduced precision, no ONNX Runtime), not the "
        "accelerated path the service uses",
    )
    bb.add_argument(
        "--batch-size", type=int, default=defaults["batch_size"].default, help="frames per forward"
    )
    bb.add_argument(
        "--motion-threads",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="CPU threads of the motion descriptor (default: the CPU count, at most 8)",
    )
    bb.add_argument("--text-captions", type=Path, help="captions JSON {video: [caption per snippet]}")
    bb.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda when available)")

    sn = parser.add_argument_group("snippets")
    sn.add_argument("--frames-per-snippet", type=int, default=16)
    sn.add_argument("--sampled-frames", type=int, default=16, help="frames kept per snippet (evenly spaced)")
    sn.add_argument("--snippets-per-batch", type=int, default=8)
    sn.add_argument(
        "--folder-fps", type=float, default=DEFAULT_FOLDER_FPS, help="frame rate of frame folders"
    )
    sn.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _video_inputs(paths: list[str], label: int, category: str | None) -> list[VideoInput]:
    inputs = []
    for raw in paths:
        path = Path(raw)
        name = path.stem if path.suffix else path.name
        inputs.append(VideoInput(name=name, uri=str(path), label=label, category=category))
    names = [item.name for item in inputs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise SystemExit(
            f"refinevad extract: several videos would be named {', '.join(clashes)}; rename them"
        )
    return inputs


def run(args: argparse.Namespace) -> int:
    pretrained = None if str(args.clip_pretrained).lower() == "none" else args.clip_pretrained
    if args.eager and args.precision not in ("auto", "fp32"):
        log.error(
            "--eager extracts with the fp32 reference; it cannot be combined with --precision %s",
            args.precision,
        )
        return 2
    overrides = {"clip_checkpoint": args.clip_checkpoint} if args.clip_checkpoint else {}
    config = BackboneConfig(
        name=args.backbone,
        clip_arch=args.clip_arch,
        clip_pretrained=pretrained,
        cache_dir=args.cache_dir,
        precision="fp32" if args.eager else args.precision,
        batch_size=args.batch_size,
        motion_threads=args.motion_threads,
        appearance_size=args.appearance_size,
        appearance_frames=args.appearance_frames,
        appearance_pooling=args.appearance_pooling,
        appearance_layer=args.appearance_layer,
        text_captions=args.text_captions,
        **overrides,
    )
    spec = SnippetSpec(
        frames_per_snippet=args.frames_per_snippet, sampled_frames_per_snippet=args.sampled_frames
    )
    if args.label == 1 and args.videos and not args.category:
        log.warning("--label 1 without --category: the videos get no category")

    jobs: list[tuple[Path, list, list[str] | None]] = []
    if args.dataset == "ped2":
        from model.data.ped2 import Ped2Dataset

        if args.root is None:
            raise SystemExit(
                "refinevad extract: --dataset ped2 needs --root (the folder with wvad_split.json)"
            )
        dataset = Ped2Dataset(args.root)
        for split in ("train", "test"):
            jobs.append((args.out / split, dataset.extraction_inputs(split), dataset.category_names))
        folder_fps = dataset.fps
    else:
        jobs.append((args.out, _video_inputs(args.videos, args.label, args.category), None))
        folder_fps = args.folder_fps

    try:
        backbone = load_backbone(config, _device(args.device))
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        log.error("cannot load the %s backbone: %s", config.name, exc)
        return 2
    # As the service: an accelerated path extracts only after matching the fp32 reference on this device.
    policy = AccelerationPolicy()
    path, backbone = check_backbone(
        backbone,
        spec.sampled_frames_per_snippet,
        policy.backbone_rtol,
        [] if args.eager else policy.backbone_runtimes,
    )
    log.info(
        "backbone %s on %s, served by %s (%s)",
        backbone.identity.key(),
        backbone.device,
        path.path,
        path.reason,
    )

    failed = 0
    for out, inputs, categories in jobs:
        report: ExtractionReport = extract_to_store(
            inputs,
            out,
            backbone,
            spec,
            snippets_per_batch=args.snippets_per_batch,
            folder_fps=folder_fps,
            category_names=categories,
            progress=not args.no_progress,
        )
        print(f"{out}: {report.summary()}")
        failed += len(report.failed)
    backbone.close()
    return 1 if failed else 0
