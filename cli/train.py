"""`refinevad train`: train the RefineVAD head on a feature store or a public-release feature list."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cli.train_feedback import add_arguments as add_feedback_arguments
from cli.train_feedback import run_from_feedback
from model.backbones.identity import BackboneIdentity
from model.config import RefineVADConfig
from model.data.datasets import FeatureSet
from model.data.feature_store import FeatureStore
from model.data.public_release import read_release_list
from model.training import TrainConfig, train

log = logging.getLogger(__name__)


def add_feature_arguments(
    parser: argparse.ArgumentParser,
    what: str,
    required: bool = True,
    datasets: tuple[str, ...] = (),
    several: bool = False,
) -> None:
    """--features STORE | --list CSV --root DIR (+ --crops, --dataset, --release-prefix, --backbone-json).

    `datasets` adds known dataset layouts to --dataset (e.g. evaluate's `ped2`), read from --root instead of a list.
    `several` lets --features take several stores, read as one set (`FeatureSet.from_stores`).
    """
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--features",
        type=Path,
        nargs="+" if several else None,
        help=f"project feature store folder{'(s)' if several else ''} with the {what} videos",
    )
    group.add_argument("--list", type=Path, help=f"public-release CSV list (path,label) of the {what} videos")
    parser.add_argument(
        "--root",
        type=Path,
        help="local folder holding the release's .npy files (with --list)"
        + (" or the dataset" if datasets else ""),
    )
    parser.add_argument(
        "--dataset",
        choices=("auto", "ucf-crime", "xd-violence", *datasets),
        default="auto",
        help="label set of --list"
        + (f", or a dataset layout under --root ({', '.join(datasets)})" if datasets else ""),
    )
    parser.add_argument(
        "--release-prefix", help="the list's path prefix to replace by --root (default: common)"
    )
    parser.add_argument(
        "--crops", help="comma-separated crop indices to use from --list (default: all listed)"
    )
    parser.add_argument(
        "--backbone-json",
        type=Path,
        help="BackboneIdentity JSON of the --list features (default: open_clip ViT-B-16 openai, the releases')",
    )


def feature_set_from_args(args: argparse.Namespace) -> FeatureSet:
    if args.features is None and args.list is None:
        raise SystemExit("give the features: --features STORE or --list CSV --root DIR")
    if args.features is not None:
        return _store_features(args.features)
    if args.root is None:
        raise SystemExit("--list needs --root (the local folder holding the feature files)")
    crops = [int(c) for c in args.crops.split(",")] if args.crops else None
    release = read_release_list(args.list, args.root, args.dataset, args.release_prefix, crops)
    backbone = (
        BackboneIdentity.model_validate_json(args.backbone_json.read_text()) if args.backbone_json else None
    )
    return FeatureSet.from_release(release, backbone, source=str(args.list))


def _store_features(paths: Path | list[Path]) -> FeatureSet:
    """One store, or several (e.g. datasets extracted apart) as one set; a mismatch is a clear exit."""
    if isinstance(paths, Path):
        return FeatureSet.from_store(FeatureStore.open(paths))
    try:
        return FeatureSet.from_stores([FeatureStore.open(path) for path in paths])
    except ValueError as exc:
        raise SystemExit(f"cannot train on these stores together: {exc}") from None


def json_argument(text: str | None) -> dict:
    if not text:
        return {}
    path = Path(text)
    return json.loads(path.read_text() if path.is_file() else text)


def run(args: argparse.Namespace) -> int:
    overrides = {
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "patience": args.patience,
        "val_fraction": args.val_fraction,
        "device": args.device,
    }
    if args.from_feedback is not None:
        given = {k: v for k, v in overrides.items() if v is not None}
        return run_from_feedback(args, json_argument(args.train_config) | given)
    if args.features is None and args.list is None:
        log.error(
            "give the training videos: --features STORE, --list CSV --root DIR or --from-feedback DATA_DIR"
        )
        return 2
    features = feature_set_from_args(args)
    train_config = TrainConfig.model_validate(json_argument(args.train_config))
    train_config = train_config.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    train_config = TrainConfig.model_validate(train_config.model_dump())
    model_fields = {"feature_dim": features.feature_dim, "category_names": list(features.category_names)}
    model_config = RefineVADConfig.model_validate(json_argument(args.model_config) | model_fields)
    result = train(
        features,
        args.out,
        train_config,
        model_config,
        resume=args.resume,
        progress=not args.no_progress,
        metadata={"backbone_key": features.backbone.key()},
    )
    summary = {
        "best_checkpoint": str(result.best_checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
        "swa_checkpoint": None if result.swa_checkpoint is None else str(result.swa_checkpoint),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "validation": result.best_metrics,
    }
    print(json.dumps(summary, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the RefineVAD head on snippet features (video-level labels)",
        description=(
            "Trains with AdamW, warm-up + cosine schedule and balanced normal/anomalous batches; selects the best "
            "epoch and stops early on a validation split held out from the TRAINING videos. Writes OUT/best.pt, "
            "OUT/last.pt (resumable) and OUT/history.json. With --from-feedback DATA_DIR: fine-tunes a checkpoint "
            "for one site on its operators' verdicts (confirmed events anomalous, false alarms normal), read "
            "from the service's database, and writes the model the service serves to OUT/best.pt."
        ),
    )
    add_feature_arguments(parser, "training", required=False, several=True)
    add_feedback_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder for checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="videos per batch, half normal and half anomalous")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    parser.add_argument("--val-fraction", type=float, help="share of training videos held out for validation")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--train-config", help="TrainConfig as JSON text or a JSON file (flags override it)")
    parser.add_argument(
        "--model-config",
        help="RefineVADConfig fields as JSON text or file (ablation switches; dim and categories come from data)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
