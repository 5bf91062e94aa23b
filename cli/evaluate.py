"""`refinevad evaluate`: run a checkpoint over a test feature set, write its score folder, print the metrics."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cli.evaluate_scores import add_ground_truth_arguments, ground_truth_from_args, print_metrics
from cli.train import add_feature_arguments, feature_set_from_args
from model.evaluation.runner import evaluate_features

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    if args.dataset == "ped2":
        return run_ped2(args)
    if args.checkpoint is None:
        raise SystemExit("give a CHECKPOINT (only --dataset ped2 defaults to the shipped model)")
    features = feature_set_from_args(args)
    truth = ground_truth_from_args(args, [r.name for r in features.records], args.features)
    scores_dir = (
        args.scores_out or Path(args.checkpoint).parent / f"scores-{Path(args.features or args.list).stem}"
    )
    metrics = evaluate_features(
        args.checkpoint,
        features,
        truth,
        scores_dir=scores_dir,
        snippet_frames=args.snippet_frames,
        exclude_normal=args.exclude_normal,
        device=args.device,
        progress=not args.json,
    )
    if args.metrics_out:
        args.metrics_out.write_text(json.dumps(metrics, indent=1))
    print_metrics(metrics, args.json)
    if not args.json:
        print(f"scores written to {scores_dir}")
    return 0


def run_ped2(args: argparse.Namespace) -> int:
    """Ped2 from its dataset folder: extract (or reuse) the split's features with the checkpoint's backbone,
    then evaluate against the split's frame labels. No checkpoint = the model shipped in the package."""
    from model.acceleration import AccelerationPolicy, check_backbone
    from model.backbones.registry import config_for_identity, load_backbone
    from model.checkpoint import load_checkpoint
    from model.data.feature_store import FeatureStore
    from model.data.ped2 import Ped2Dataset
    from model.evaluation.runner import evaluate_store, ped2_frame_labels
    from model.extraction import extract_to_store
    from model.inference import DEFAULT_CHECKPOINT, resolve_checkpoint
    from model.training import resolve_device
    from model.video.snippets import SnippetSpec

    if args.root is None:
        raise SystemExit("--dataset ped2 needs --root (the folder holding wvad_split.json)")
    if args.split != "test":
        raise SystemExit("only the test split has frame labels; training clips carry video-level labels only")
    checkpoint_path = resolve_checkpoint(args.checkpoint) or DEFAULT_CHECKPOINT
    if not checkpoint_path.is_file():
        raise SystemExit(f"no checkpoint at {checkpoint_path}: train one with `refinevad train`")
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(checkpoint_path, map_location=device)
    if args.features is not None:
        store = FeatureStore.open(args.features)
    else:
        dataset = Ped2Dataset(args.root)
        identity = checkpoint.backbone
        if identity.name == "clip" and not args.clip_checkpoint:
            raise SystemExit(
                f"the checkpoint's backbone is {identity.key()}: pass --features or --clip-checkpoint"
            )
        overrides = {"clip_checkpoint": args.clip_checkpoint} if args.clip_checkpoint else {}
        backbone = load_backbone(config_for_identity(identity, **overrides), device)
        problem = identity.mismatch(backbone.identity)
        if problem:
            raise SystemExit(problem)
        cache = args.cache_dir or Path.home() / ".cache" / "refinevad" / "features"
        root = cache / f"ped2-{args.split}-{backbone.identity.key().replace(':', '_').replace('/', '_')}"
        spec = SnippetSpec(
            frames_per_snippet=checkpoint.config.frames_per_snippet,
            sampled_frames_per_snippet=checkpoint.config.sampled_frames_per_snippet,
        )
        # A reduced-precision backbone (fp16 on CUDA) extracts only after matching its fp32 reference.
        _, backbone = check_backbone(
            backbone, spec.sampled_frames_per_snippet, AccelerationPolicy().backbone_rtol
        )
        report = extract_to_store(
            dataset.extraction_inputs(args.split),
            root,
            backbone,
            spec,
            folder_fps=dataset.fps,
            category_names=dataset.category_names,
            progress=not args.json,
        )
        if report.failed:
            raise SystemExit(f"could not extract {sorted(report.failed)}: {report.failed}")
        store = FeatureStore.open(root)
    metrics = evaluate_store(
        checkpoint, store, ped2_frame_labels(args.root), scores_dir=args.scores_out, device=str(device)
    )
    metrics["dataset"] = "ped2"
    metrics["split"] = args.split
    if args.metrics_out:
        args.metrics_out.write_text(json.dumps(metrics, indent=1))
    print_metrics(metrics, args.json)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained checkpoint on a test feature set (benchmark protocol)",
        description=(
            "Scores every test video at full length, writes SCORES_OUT/<video>.npy and <video>.categories.npy "
            "(the evaluate-scores format) and prints AUC, AnoAUC, AP, AP (trapezoid) and mAP@IoU. The checkpoint's "
            "backbone must match the features'."
        ),
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        help="trained checkpoint (e.g. OUT/best.pt of refinevad train); with --dataset ped2 the default is the "
        "model shipped in the package",
    )
    add_feature_arguments(parser, "test", required=False, datasets=("ped2",))
    parser.add_argument("--split", default="test", help="dataset split (--dataset ped2)")
    parser.add_argument(
        "--cache-dir", type=Path, help="where --dataset extracts features (default ~/.cache/refinevad)"
    )
    parser.add_argument(
        "--clip-checkpoint", type=Path, help="CLIP weights, when the checkpoint's backbone is clip"
    )
    add_ground_truth_arguments(parser, required=False, snippet_frames=None)
    parser.add_argument(
        "--scores-out", type=Path, help="score folder to write (default: next to the checkpoint)"
    )
    parser.add_argument("--metrics-out", type=Path, help="also write the metrics JSON to this file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(func=run)
