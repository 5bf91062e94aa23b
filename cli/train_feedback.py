"""`refinevad train --from-feedback DATA_DIR`: fine-tune a head for one site on its operators' verdicts.

Reads the service's database (the SQLite file in DATA_DIR, or REFINEVAD_DATABASE_URL; the other REFINEVAD_*
settings apply as in the service), builds a weakly labelled feature store from the events with a verdict and a
ready clip (`service.scene.feedback_dataset`: confirmed = anomalous with its category, false alarm = normal,
plus `--normal` recordings) under OUT/features, and fine-tunes the base checkpoint on it (`model.fine_tune`).
Features are extracted by the engine the service builds (`AnalysisEngine`, with its start-up checks of the
accelerated backbone), so they are the features the service computes when serving. OUT/best.pt is what
REFINEVAD_MODEL_CHECKPOINT then serves.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from model.backbones.identity import BackboneIdentity
from model.checkpoint import load_checkpoint_payload
from model.data.datasets import FeatureSet
from model.fine_tune import fine_tune, fine_tune_config
from model.inference import AnalysisEngine, resolve_checkpoint
from service.model_service import engine_config
from service.scene.feedback_dataset import (
    DEFAULT_MIN_PER_CLASS,
    DEFAULT_NORMAL_CHUNK_S,
    FEATURES_DIR,
    FeedbackDatasetError,
    build_feedback_store,
    open_media,
    open_service_database,
    plan_feedback,
)
from service.settings import ServiceSettings
from service.storage import StorageError

log = logging.getLogger(__name__)

TRAINED_FROM = "operator_feedback"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "operator feedback (--from-feedback)",
        "fine-tune a head for one site on the verdicts its operators gave (POST /events/{id}/feedback)",
    )
    group.add_argument(
        "--from-feedback",
        type=Path,
        metavar="DATA_DIR",
        help="the service's data directory (its database: the SQLite file there, or REFINEVAD_DATABASE_URL)",
    )
    group.add_argument(
        "--base",
        help="checkpoint to fine-tune: a file or a shipped model's name (default: the shipped default model)",
    )
    group.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="STREAM_ID",
        help="only this camera's events (repeatable)",
    )
    group.add_argument(
        "--normal",
        nargs="+",
        type=Path,
        default=[],
        metavar="VIDEO",
        help="recordings known to be normal (e.g. those the camera was calibrated on), as normal training videos",
    )
    group.add_argument(
        "--normal-chunk-s",
        type=float,
        default=DEFAULT_NORMAL_CHUNK_S,
        help="--normal recordings are cut into normal videos of about this many seconds",
    )
    group.add_argument(
        "--min-per-class",
        type=int,
        default=DEFAULT_MIN_PER_CLASS,
        help="fewest anomalous and fewest normal examples to fine-tune on (at least 2)",
    )


def _encoder(engine: AnalysisEngine):
    def encode(path: Path) -> tuple[np.ndarray, int, float]:
        encoded = engine.encode(path)
        return encoded.features.float().cpu().numpy(), encoded.frames, encoded.info.fps

    return encode


def run_from_feedback(args: argparse.Namespace, overrides: dict) -> int:
    """`overrides`: TrainConfig fields from `--train-config` and the schedule flags (`--epochs`, `--lr`, ...),
    over the base run's objective and `FINE_TUNE_DEFAULTS`. Returns the exit status (2: bad input, said why)."""
    if args.features is not None or args.list is not None:
        log.error("--from-feedback builds its own training set: leave out --features and --list")
        return 2
    if args.resume or args.model_config:
        log.error(
            "--from-feedback fine-tunes the base model as it is: --resume and --model-config do not apply"
        )
        return 2
    if args.min_per_class < 2:
        log.error(
            "--min-per-class must be at least 2 (one to train on, one held out), not %d", args.min_per_class
        )
        return 2
    if args.normal_chunk_s <= 0:
        log.error("--normal-chunk-s must be positive, not %g", args.normal_chunk_s)
        return 2
    base = resolve_checkpoint(args.base)
    if base is None or not base.is_file():
        log.error("no base checkpoint %s: give --base FILE", base or "(the package ships no default model)")
        return 2
    try:
        settings = ServiceSettings(data_dir=args.from_feedback)
        payload = load_checkpoint_payload(base)
        train_config = fine_tune_config(payload.get("metadata", {}).get("train_config"), overrides)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    base_backbone = BackboneIdentity.model_validate(payload["backbone"])
    category_names = list(payload["config"]["category_names"])
    del payload  # the weights are read again by the engine and by the fine-tune
    try:
        db = open_service_database(settings)
    except (FeedbackDatasetError, ValueError, StorageError) as exc:
        log.error("cannot open the service's database: %s", exc)
        return 2
    try:
        media = open_media(db, settings)
        # The verdicts are checked before the model loads: a bad set fails in a second, not after a minute.
        plan = plan_feedback(
            db,
            media,
            category_names,
            cameras=args.camera,
            normal_videos=args.normal,
            min_per_class=args.min_per_class,
        )
        config = engine_config(settings).model_copy(
            update={"checkpoint": base, "head_backend": "torch"}
            | ({"device": args.device} if args.device else {})
        )
        try:
            engine = AnalysisEngine.from_config(config)
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            log.error("cannot load the base model %s: %s", base, exc)
            return 2
        log.info("base model %s on backbone %s", base, base_backbone.key())
        try:
            built = build_feedback_store(
                plan,
                media,
                _encoder(engine),
                args.out / FEATURES_DIR,
                engine.backbone.identity,
                engine.spec.frames_per_snippet,
                engine.spec.sampled_frames_per_snippet,
                category_names,
                normal_chunk_s=args.normal_chunk_s,
                progress=not args.no_progress,
            )
        finally:
            engine.backbone.close()
        database = db.describe()
    except (ValueError, StorageError) as exc:  # FeedbackDatasetError, or OUT/features of another backbone
        log.error("cannot build the training set: %s", exc)
        return 2
    finally:
        db.close()
    features = FeatureSet.from_store(built.store, category_names).subset(built.names)
    feedback = built.summary() | {"database": database, "cameras": list(args.camera) or None}
    metadata = {
        "trained_from": TRAINED_FROM,
        "feedback": feedback,
        "description": (
            f"{base.name} fine-tuned on operator feedback: {built.confirmed} confirmed events, "
            f"{built.false_alarms} false alarms, {built.normal_pieces} pieces of normal footage"
        ),
    }
    log.info(
        "fine-tuning %s on %d anomalous and %d normal videos (%d extracted now) for %d epochs",
        base.name,
        built.confirmed,
        built.false_alarms + built.normal_pieces,
        built.extracted,
        train_config.epochs,
    )
    result = fine_tune(
        features, base, args.out, train_config, metadata=metadata, progress=not args.no_progress
    )
    summary = {
        "best_checkpoint": str(result.checkpoint),
        "base_checkpoint": str(base),
        "members": len(result.members),
        "epochs": train_config.epochs,
        "best_epochs": [r.best_epoch for r in result.members],
        "validation": [r.best_metrics for r in result.members],
        "feedback": feedback,
        "serve": f"REFINEVAD_MODEL_CHECKPOINT={result.checkpoint}",
    }
    print(json.dumps(summary, indent=1))
    return 0
