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
        "checkpoint", type=Path, help="trained checkpoint (e.g. OUT/best.pt of refinevad train)"
    )
    add_feature_arguments(parser, "test")
    add_ground_truth_arguments(parser, required=False, snippet_frames=None)
    parser.add_argument(
        "--scores-out", type=Path, help="score folder to write (default: next to the checkpoint)"
    )
    parser.add_argument("--metrics-out", type=Path, help="also write the metrics JSON to this file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(func=run)
