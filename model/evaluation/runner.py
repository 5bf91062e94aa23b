"""`refinevad evaluate`'s core: run a checkpoint over a test feature set, write the score folder, compute metrics."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.data.datasets import FeatureSet
from model.data.feature_store import FeatureStore
from model.evaluation.ground_truth import NORMAL, FrameLabels, VideoTruth, runs_of_ones
from model.evaluation.metrics import compute_metrics
from model.evaluation.scores_folder import write_category_names, write_video_scores
from model.scoring import score_features
from model.training import resolve_device

log = logging.getLogger(__name__)


def truth_for_store(store: FeatureStore, frame_labels: FrameLabels | None) -> list[VideoTruth]:
    """Ground truth of every video in a project feature store, in store order.

    A video with frame labels uses them (its category from the store entry, else from `frame_labels`); a normal
    video without frame labels is normal over all its frames; an anomalous one without frame labels is an error.
    """
    labels = frame_labels.frames if frame_labels else {}
    truth = []
    for entry in store:
        if entry.name in labels:
            per_frame = np.asarray(labels[entry.name])
            intervals = tuple(runs_of_ones(per_frame))
            category = NORMAL
            if intervals:
                category = entry.category or (
                    frame_labels.categories.get(entry.name) if frame_labels else None
                )
                category = category or (frame_labels.default_category if frame_labels else "Anomaly")
            truth.append(VideoTruth(entry.name, category, intervals, int(per_frame.size)))
        elif entry.label == 0:
            truth.append(VideoTruth(entry.name, NORMAL, (), entry.num_frames or None))
        else:
            raise ValueError(f"anomalous video {entry.name!r} has no frame labels: cannot evaluate it")
    return truth


def ped2_frame_labels(root: str | os.PathLike[str]) -> FrameLabels:
    """Frame labels of the UCSD Ped2 test split (this project's weakly supervised split), keyed by store name
    (`testing_01`, ...) with each anomalous clip's category; normal test clips get all-zero labels."""
    from model.data.ped2 import Ped2Dataset  # Ped2 reading pulls in the video stack; only needed here

    dataset = Ped2Dataset(root)
    clips = dataset.split("test")
    return FrameLabels(
        frames={clip.name: dataset.frame_labels(clip).tolist() for clip in clips},
        categories={clip.name: clip.category for clip in clips if clip.category},
    )


def _checkpoint(
    checkpoint: LoadedCheckpoint | str | os.PathLike[str], device: torch.device
) -> LoadedCheckpoint:
    if isinstance(checkpoint, LoadedCheckpoint):
        checkpoint.model.to(device).eval()
        return checkpoint
    return load_checkpoint(checkpoint, map_location=device)


def evaluate_features(
    checkpoint: LoadedCheckpoint | str | os.PathLike[str],
    features: FeatureSet,
    truth: Sequence[VideoTruth],
    scores_dir: str | os.PathLike[str] | None = None,
    snippet_frames: int | None = None,
    exclude_normal: bool = False,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Score every annotated video with the checkpoint (full length, first listed crop), optionally write the
    `evaluate-scores` folder, and return the metrics plus what was evaluated."""
    torch_device = resolve_device(device)
    ck = _checkpoint(checkpoint, torch_device)
    problem = ck.backbone.mismatch(features.backbone)
    if problem:
        raise ValueError(f"{problem} (features in {features.source})")
    by_name = {r.name: r for r in features.records}
    missing = [t.name for t in truth if t.name not in by_name]
    if missing:
        raise ValueError(
            f"{len(missing)} annotated videos have no features in {features.source}: {missing[:5]}"
        )
    names = list(ck.config.category_names)
    if scores_dir is not None:
        write_category_names(scores_dir, names)
    scores: dict[str, np.ndarray] = {}
    distributions: dict[str, np.ndarray] = {}
    for video in tqdm(truth, desc="scoring", disable=not progress, leave=False):
        x = torch.from_numpy(features.load(by_name[video.name])).to(torch_device)
        result = score_features(ck.model, x)
        scores[video.name] = result.scores.float().cpu().numpy()
        distributions[video.name] = result.category_weights.float().cpu().numpy()
        if scores_dir is not None:
            write_video_scores(scores_dir, video.name, scores[video.name], distributions[video.name])
    metrics = compute_metrics(
        truth,
        scores,
        distributions,
        names,
        snippet_frames=snippet_frames or ck.config.frames_per_snippet,
        exclude_normal=exclude_normal,
    )
    metrics["checkpoint"] = str(ck.path) if ck.path else None
    metrics["trained"] = ck.trained
    metrics["backbone"] = ck.backbone.key()
    metrics["features"] = features.source
    if scores_dir is not None:
        metrics["scores_dir"] = str(Path(scores_dir))
    return metrics


def evaluate_store(
    checkpoint: LoadedCheckpoint | str | os.PathLike[str],
    store: FeatureStore,
    frame_labels: FrameLabels | Sequence[VideoTruth] | None,
    scores_dir: str | os.PathLike[str] | None = None,
    exclude_normal: bool = False,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a project feature store.

    Ground truth is either per-video frame labels (FrameLabels; normal videos may be left out) or interval
    annotations (a VideoTruth list, e.g. from `read_annotations`, which fixes the video order).
    """
    if frame_labels is None or isinstance(frame_labels, FrameLabels):
        truth = truth_for_store(store, frame_labels)
    else:
        truth = list(frame_labels)
    return evaluate_features(
        checkpoint,
        FeatureSet.from_store(store),
        truth,
        scores_dir=scores_dir,
        snippet_frames=store.manifest.frames_per_snippet,
        exclude_normal=exclude_normal,
        device=device,
        progress=progress,
    )
