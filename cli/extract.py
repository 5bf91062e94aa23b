"""`refinevad extract`: snippet features of videos, known datasets or dataset manifests into feature stores.

`--dataset ped2 surv-fight ped1` and `--manifest FILE.json|csv` (any mix) write one store per split, OUT/train
and OUT/test, carrying each video's label, category, source group and licence (`model.data.manifest`).

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
from model.backbones.registry import MOTION_DESCRIPTORS, BackboneConfig, load_backbone
from model.data.dataset_readers import READERS, dataset_manifest, default_root
from model.data.manifest import SPLITS, DatasetManifest, ManifestError, check_mix, read_manifest
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
    parser.add_argument("--videos", nargs="+", metavar="PATH", help="video files or frame folders")
    parser.add_argument(
        "--dataset",
        nargs="+",
        metavar="NAME[=ROOT]",
        help=f"known datasets ({', '.join(READERS)}), any mix; ROOT defaults to --root (one dataset) or "
        "$REFINEVAD_SHARED_DATA/NAME",
    )
    parser.add_argument(
        "--manifest",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="dataset manifests (.json or .csv, see README 'Training on your own footage'); mix with --dataset",
    )
    parser.add_argument(
        "--root", type=Path, help="dataset root (for one --dataset), e.g. ../shared/data/ped2"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output store (--dataset / --manifest: OUT/train and OUT/test, one store per split that has videos)",
    )
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
    bb.add_argument(
        "--motion-descriptor",
        choices=MOTION_DESCRIPTORS,
        default=defaults["motion_descriptor"].default,
        help="motion and two_stream: the motion descriptor's version (v2 adds the motion-dynamics block)",
    )
    bb.add_argument("--text-captions", type=Path, help="captions JSON {video: [caption per snippet]}")
    bb.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda when available)")

    sn = parser.add_argument_group("snippets")
    sn.add_argument("--frames-per-snippet", type=int, default=16)
    sn.add_argument("--sampled-frames", type=int, default=16, help="frames kept per snippet (evenly spaced)")
    sn.add_argument("--snippets-per-batch", type=int, default=8)
    sn.add_argument(
        "--folder-fps",
        type=float,
        default=DEFAULT_FOLDER_FPS,
        help="frame rate of frame folders given with --videos (a dataset or manifest states its own)",
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


def _manifests(args: argparse.Namespace) -> list[DatasetManifest]:
    """The --dataset and --manifest manifests, checked: known names, roots given, files present, names distinct.
    Raises ManifestError (or FileNotFoundError, KeyError) with the reason."""
    datasets = args.dataset or []
    manifests = []
    for spec in datasets:
        name, _, root_text = spec.partition("=")
        if name not in READERS:
            raise ManifestError(f"unknown dataset {name!r} (known: {', '.join(READERS)})")
        root = Path(root_text) if root_text else (args.root if len(datasets) == 1 else None)
        root = root or default_root(name)
        if root is None:
            raise ManifestError(
                f"--dataset {name}: where is it? give {name}=ROOT, --root ROOT (one dataset) or set "
                "REFINEVAD_SHARED_DATA"
            )
        manifests.append(dataset_manifest(name, root))
    manifests += [read_manifest(path) for path in args.manifest or []]
    check_mix(manifests)
    for manifest in manifests:
        missing = manifest.missing()
        if missing:
            shown = ", ".join(str(manifest.resolve(e)) for e in missing[:5])
            raise ManifestError(
                f"{manifest.name}: {len(missing)} of {len(manifest.entries)} videos are missing: {shown}"
                + (" ..." if len(missing) > 5 else "")
            )
    return manifests


def _manifest_jobs(manifests: list[DatasetManifest], out: Path) -> list[tuple[Path, list, list[str] | None]]:
    """One store per split that has videos (OUT/train, OUT/test), all categories indexed alike in both."""
    categories = sorted({c for m in manifests for c in m.category_names})
    jobs = []
    for split in SPLITS:
        inputs = [item for m in manifests for item in m.extraction_inputs(split)]
        if inputs:
            jobs.append((out / split, inputs, categories))
    for manifest in manifests:
        counts = {s: len(manifest.split(s)) for s in SPLITS}
        log.info(
            "%s: %d train, %d test videos (%s)", manifest.name, counts["train"], counts["test"], manifest.root
        )
    return jobs


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
        motion_descriptor=args.motion_descriptor,
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

    if bool(args.videos) == bool(args.dataset or args.manifest):
        log.error("give the videos: --videos PATH ..., or --dataset NAME ... and/or --manifest FILE ...")
        return 2
    jobs: list[tuple[Path, list, list[str] | None]] = []
    if args.videos:
        jobs.append((args.out, _video_inputs(args.videos, args.label, args.category), None))
    else:
        try:
            manifests = _manifests(args)
        except (ManifestError, FileNotFoundError, KeyError) as exc:
            log.error("%s", exc.args[0] if isinstance(exc, KeyError) else exc)
            return 2
        jobs = _manifest_jobs(manifests, args.out)

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
            folder_fps=args.folder_fps,
            category_names=categories,
            progress=not args.no_progress,
        )
        print(f"{out}: {report.summary()}")
        failed += len(report.failed)
    backbone.close()
    return 1 if failed else 0
