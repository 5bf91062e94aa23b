"""`refinevad evaluate-scores`: benchmark metrics for per-video snippet scores produced by any method."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from model.data.feature_store import FeatureStore
from model.evaluation.ground_truth import FrameLabels, VideoTruth, read_annotations, read_xd_annotations
from model.evaluation.metrics import compute_metrics
from model.evaluation.scores_folder import read_scores_folder

log = logging.getLogger(__name__)


def add_ground_truth_arguments(
    parser: argparse.ArgumentParser, required: bool = True, snippet_frames: int | None = 16
) -> None:
    """--annotations FILE | --frame-labels FILE, shared by evaluate and evaluate-scores."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--annotations",
        type=Path,
        help="interval annotation file (UCF-Crime test_annotations.txt or Temporal_Anomaly_Annotation.txt format)",
    )
    group.add_argument(
        "--xd-annotations",
        type=Path,
        help="XD-Violence annotations.txt (`<video> s1 e1 ...` for anomalous videos; the others are normal)",
    )
    group.add_argument(
        "--frame-labels",
        type=Path,
        help='per-frame labels JSON: {"frames": {video: [0, 1, ...]}, "categories": {video: name}}',
    )
    parser.add_argument(
        "--snippet-frames",
        type=int,
        default=snippet_frames,
        help=f"frames per snippet (default {snippet_frames or 'the checkpoint value'})",
    )
    parser.add_argument(
        "--exclude-normal",
        action="store_true",
        help="mAP@IoU over the anomaly categories and anomalous videos only (default: Normal class included)",
    )


def ground_truth_from_args(
    args: argparse.Namespace, video_names: Sequence[str], store: Path | None = None
) -> list[VideoTruth]:
    """The test set's ground truth from --annotations / --xd-annotations / --frame-labels; a project feature
    store (`store`) also supplies its normal videos and categories."""
    if args.annotations is not None:
        return read_annotations(args.annotations)
    if args.xd_annotations is not None:
        return read_xd_annotations(args.xd_annotations, video_names)
    labels = FrameLabels.load(args.frame_labels) if args.frame_labels else None
    if store is not None:
        from model.evaluation.runner import truth_for_store  # pulls in torch; evaluate-scores never gets here

        return truth_for_store(FeatureStore.open(store), labels)
    if labels is None:
        raise SystemExit(
            "give the test set's ground truth: --annotations, --xd-annotations or --frame-labels"
        )
    return labels.to_truth()


def print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics, indent=1))
        return

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    m = metrics["map_iou"]
    print(f"videos {metrics['num_videos']}, frames {metrics['num_frames']}")
    print(f"AUC {pct(metrics['auc'])}  AnoAUC {pct(metrics['ano_auc'])}")
    print(f"AP (sklearn) {pct(metrics['ap'])}  AP (trapezoid) {pct(metrics['ap_trapz'])}")
    print(
        f"mAP@IoU ({metrics['map_iou_classes']}): "
        + "/".join(f"{m[k]:.2f}" for k in ("0.1", "0.2", "0.3", "0.4", "0.5"))
        + f"  avg {m['avg']:.2f}"
    )


def run(args: argparse.Namespace) -> int:
    folder = read_scores_folder(args.scores)
    truth = ground_truth_from_args(args, sorted(folder.scores))
    metrics = compute_metrics(
        truth,
        folder.scores,
        folder.distributions,
        folder.category_names,
        snippet_frames=args.snippet_frames,
        exclude_normal=args.exclude_normal,
    )
    print_metrics(metrics, args.json)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate-scores",
        help="benchmark metrics (AUC, AnoAUC, AP, mAP@IoU) of any method's per-video snippet scores",
        description=(
            "Reads DIR/<video>.npy snippet scores [T_i] (and optional DIR/<video>.categories.npy [C] with "
            "DIR/categories.json naming the C categories) and scores them with the benchmark protocol: frame "
            "scores = snippet scores repeated --snippet-frames times, ground truth over frames [0, min(16 T_i, N_i))."
        ),
    )
    parser.add_argument("--scores", type=Path, required=True, help="folder of <video>.npy snippet scores")
    add_ground_truth_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(func=run)
