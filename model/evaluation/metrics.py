"""Benchmark metrics of per-video snippet scores against frame-level ground truth.

Keys of the result (the `evaluate` / `evaluate-scores` JSON): ``auc`` (frame ROC-AUC over all videos),
``ano_auc`` (frame ROC-AUC over anomalous videos only), ``ap`` (scikit-learn's step-wise average precision),
``ap_trapz`` (trapezoid area under the precision-recall curve, the other definition used for XD-Violence),
``map_iou`` (localisation mAP at IoU 0.1..0.5 and their average, see detection_map.py), ``map_iou_classes``
(which class set the mAP covers), ``num_videos``, ``num_frames``. A metric that is undefined on the given set
(e.g. AUC with a single class present) is ``null``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from model.evaluation.detection_map import detection_map
from model.evaluation.ground_truth import NORMAL, VideoTruth, build_ground_truth

log = logging.getLogger(__name__)


def _binary_defined(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def frame_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if _binary_defined(labels) else None


def frame_ap(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(average_precision_score(labels, scores)) if labels.sum() > 0 else None


def frame_ap_trapz(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if labels.sum() == 0:
        return None
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(area_under_curve(recall, precision))


def frame_scores_of(snippet_scores: np.ndarray, length: int, snippet_frames: int = 16) -> np.ndarray:
    """Snippet scores repeated per frame, cut to the video's ground-truth length."""
    return np.repeat(np.asarray(snippet_scores, dtype=np.float64).reshape(-1), snippet_frames)[:length]


def check_scores(truth: Sequence[VideoTruth], scores: Mapping[str, np.ndarray]) -> None:
    missing = [t.name for t in truth if t.name not in scores]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"no scores for {len(missing)} of {len(truth)} annotated videos: {shown}")
    extra = set(scores) - {t.name for t in truth}
    if extra:
        log.warning("%d scored videos are not in the annotation and are ignored", len(extra))
    for t in truth:
        s = np.asarray(scores[t.name])
        if s.ndim != 1 or s.size == 0:
            raise ValueError(f"{t.name}: snippet scores must be a non-empty 1-D array, got shape {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{t.name}: snippet scores contain NaN or infinity")


def compute_metrics(
    truth: Sequence[VideoTruth],
    scores: Mapping[str, np.ndarray],
    category_distributions: Mapping[str, np.ndarray] | None = None,
    category_names: Sequence[str] | None = None,
    snippet_frames: int = 16,
    exclude_normal: bool = False,
) -> dict:
    """All protocol metrics for ``scores`` (video name -> [T_i] snippet scores) against ``truth``.

    ``category_distributions`` (video name -> [C]) and ``category_names`` (the C names) feed the mAP; without a
    distribution a video's weights are uniform. Without ``category_names`` the categories are the annotated ones,
    sorted.
    """
    truth = list(truth)
    check_scores(truth, scores)
    distributions = dict(category_distributions or {})
    if category_names is None:
        category_names = sorted({t.category for t in truth if t.category != NORMAL})
    names = list(category_names)
    for name, dist in distributions.items():
        if np.asarray(dist).shape != (len(names),):
            raise ValueError(
                f"{name}: category distribution has shape {np.shape(dist)}, expected ({len(names)},)"
            )

    gt = build_ground_truth(
        truth, {t.name: int(np.asarray(scores[t.name]).size) for t in truth}, snippet_frames
    )
    per_video = [
        frame_scores_of(scores[t.name], int(n), snippet_frames)
        for t, n in zip(truth, gt.lengths, strict=True)
    ]
    frame_scores = np.concatenate(per_video) if per_video else np.zeros(0)
    anomalous_frames = gt.frame_mask(gt.anomalous_video_mask)

    result = {
        "auc": frame_auc(gt.labels, frame_scores),
        "ano_auc": frame_auc(gt.labels[anomalous_frames], frame_scores[anomalous_frames]),
        "ap": frame_ap(gt.labels, frame_scores),
        "ap_trapz": frame_ap_trapz(gt.labels, frame_scores),
        "map_iou": detection_map(
            gt,
            per_video,
            [distributions.get(t.name) for t in truth],
            names,
            exclude_normal=exclude_normal,
        ),
        "map_iou_classes": (
            "anomaly categories only, anomalous videos only"
            if exclude_normal
            else "Normal + anomaly categories"
        ),
        "num_videos": len(truth),
        "num_frames": int(gt.labels.size),
        "num_anomalous_frames": int(gt.labels.sum()),
    }
    return result
