"""`refinevad calibrate`: store a scene-familiarity check in a trained checkpoint.

Checkpoints trained before the check existed (and models trained elsewhere) carry no calibration, so footage of
other cameras is not flagged. This fits it on the model's training features (model.scene_familiarity) and writes
it into the checkpoint's metadata; weights are not touched. `refinevad train` stores it by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm.auto import tqdm

from cli.train import add_feature_arguments, feature_set_from_args
from model.backbones.identity import BackboneIdentity
from model.checkpoint import load_checkpoint_payload, update_checkpoint_metadata
from model.scene_familiarity import DEFAULT_MARGIN, METADATA_KEY, fit_scene_familiarity

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    payload = load_checkpoint_payload(args.checkpoint)
    features = feature_set_from_args(args)
    trained_on = BackboneIdentity.model_validate(payload["backbone"])
    problem = trained_on.mismatch(features.backbone)
    if problem:
        raise SystemExit(f"the features are not the checkpoint's: {problem}")
    records = {r.name: r for r in features.records}
    bar = tqdm(total=2 * len(records), desc="calibrating", disable=args.no_progress)

    def load(name: str):
        bar.update()
        return features.load(records[name])

    calibration = fit_scene_familiarity(list(records), load, args.margin)
    bar.close()
    target = update_checkpoint_metadata(
        args.checkpoint, {METADATA_KEY: calibration.model_dump(mode="json")}, args.out
    )
    summary = {
        "checkpoint": str(target),
        "training_videos": len(records),
        "threshold": calibration.threshold,
        "margin": calibration.margin,
        "largest_training_distance": max(calibration.training_clip_distances.values()),
    }
    print(json.dumps(summary, indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="store a scene-familiarity check (flags footage unlike the training footage) in a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained checkpoint file")
    add_feature_arguments(parser, "training")
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="threshold = margin x the largest leave-one-video-out training distance",
    )
    parser.add_argument("--out", type=Path, help="write here instead of updating the checkpoint in place")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
