"""Anomaly localisation mAP at temporal IoU thresholds (the UCF-Crime "mAP@IoU" used by VadCLIP and followers).

Definition implemented here (per the widely used public evaluation):

1. Per video, class score curves over frames: column 0 (Normal) = 1 - score, column 1 + c = score * w_c, where w
   is the video's category distribution (uniform when a method gives none).
2. Per column, the mean of its top 1/16 frames (at least one frame); a column whose mean is not positive yields no
   segment.
3. Threshold each column at max - 0.6 * (max - min); every run of at least 2 frames strictly above it is a segment
   scored run max + 0.7 * that top-1/16 mean.
4. NMS at IoU 0.6 per video and class.
5. Per class, segments of all videos sorted by score are matched greedily to the ground-truth intervals of that
   class (best IoU among those still unmatched in the same video, if >= the IoU threshold); AP = sum of the
   precision at each true positive / number of ground-truth intervals.
6. Report mean over classes x 100. Normal videos' ground truth is one Normal interval over the whole video.
   Classes without any ground-truth interval in the evaluated set are left out of the mean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.evaluation.ground_truth import NORMAL, FrameGroundTruth

log = logging.getLogger(__name__)

IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
THRESHOLD_FRACTION = 0.6  # threshold = max - 0.6 * (max - min)
MIN_SEGMENT_FRAMES = 2
CLASS_SCORE_WEIGHT = 0.7  # segment score = run max + 0.7 * top-1/16 mean
NMS_IOU = 0.6
TOP_FRACTION_DIVISOR = 16


@dataclass(frozen=True)
class ClassSegments:
    """Detected segments of one class: video index, [start, end) in frames and score, one entry per segment."""

    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls) -> ClassSegments:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def class_curves(frame_scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[L, 1 + C]: Normal = 1 - score, then score * w_c."""
    s = np.asarray(frame_scores, dtype=np.float64)
    return np.concatenate((1.0 - s[:, None], s[:, None] * np.asarray(weights, np.float64)[None, :]), axis=1)


def top_fraction_mean(curves: np.ndarray) -> np.ndarray:
    """Per column, the mean of its top L // 16 values (at least one)."""
    k = max(1, curves.shape[0] // TOP_FRACTION_DIVISOR)
    top = -np.partition(-curves, k - 1, axis=0)[:k]
    return top.mean(axis=0)


def interval_iou(s1: np.ndarray, e1: np.ndarray, s2: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """IoU of [s, e) frame ranges, broadcasting."""
    inter = np.maximum(np.minimum(e1, e2) - np.maximum(s1, s2), 0)
    union = (e1 - s1) + (e2 - s2) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def video_segments(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Segments of every column of one video: (column, start, end, score), vectorised over frames and columns."""
    length, columns = curves.shape
    class_score = top_fraction_mean(curves)
    high, low = curves.max(axis=0), curves.min(axis=0)
    threshold = high - THRESHOLD_FRACTION * (high - low)
    above = (curves > threshold[None, :]) & (class_score > 0)[None, :]
    # Column-major edges so that starts and ends come out grouped by column, in time order, pairwise aligned.
    padded = np.zeros((columns, length + 2), dtype=np.int8)
    padded[:, 1:-1] = above.T
    edges = np.diff(padded, axis=1)
    col, start = np.nonzero(edges == 1)
    _, end = np.nonzero(edges == -1)
    keep = end - start >= MIN_SEGMENT_FRAMES
    col, start, end = col[keep], start[keep], end[keep]
    if col.size == 0:
        return col, start, end, np.zeros(0)
    flat = np.append(curves.T.ravel(), 0.0)  # the extra element lets reduceat take an end index of L * C
    bounds = np.stack((col * length + start, col * length + end), axis=1).ravel()
    run_max = np.maximum.reduceat(flat, bounds)[::2]
    return col, start, end, run_max + CLASS_SCORE_WEIGHT * class_score[col]


def temporal_nms(start: np.ndarray, end: np.ndarray, score: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by non-maximum suppression of [start, end) segments (one video, one class), best first."""
    order = np.argsort(-score, kind="stable")
    by_start = np.argsort(start, kind="stable")
    if np.all(start[by_start][1:] >= np.maximum.accumulate(end[by_start])[:-1]):
        return (
            order  # disjoint segments (always so for the runs of one thresholded curve): nothing to suppress
        )
    s, e = start[order], end[order]
    overlap = interval_iou(s[:, None], e[:, None], s[None, :], e[None, :])
    np.fill_diagonal(overlap, 0.0)
    suppressed = np.zeros(order.size, dtype=bool)
    kept = []
    for i in range(order.size):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= overlap[i] > iou
    return order[np.asarray(kept, dtype=np.int64)]


def average_precision(segments: ClassSegments, gt: ClassSegments, iou_threshold: float) -> float:
    """Greedy matching of score-sorted segments to ground-truth intervals; sum(precision at TPs) / #gt."""
    num_gt = gt.video.size
    if segments.video.size == 0 or num_gt == 0:
        return 0.0
    order = np.argsort(-segments.score, kind="stable")
    video, start, end = segments.video[order], segments.start[order], segments.end[order]
    tp = np.zeros(video.size)
    # Only segments in a video with ground truth of this class can match; the IoU matrix covers just those rows.
    rows = np.flatnonzero(np.isin(video, gt.video))
    iou = interval_iou(start[rows, None], end[rows, None], gt.start[None, :], gt.end[None, :])
    iou = np.where(video[rows, None] == gt.video[None, :], iou, 0.0)
    available = np.ones(num_gt, dtype=bool)
    # Greedy in score order; the loop runs over candidate segments, never over frames.
    for r in np.flatnonzero((iou >= iou_threshold).any(axis=1)):
        i = rows[r]
        candidates = np.where(available & (iou[r] >= iou_threshold), iou[r], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= 0:
            available[j] = False
            tp[i] = 1.0
    precision = np.cumsum(tp) / np.arange(1, tp.size + 1)
    return float(np.sum(precision * tp) / num_gt)


def detection_map(
    gt: FrameGroundTruth,
    frame_scores: Sequence[np.ndarray],
    category_weights: Sequence[np.ndarray | None],
    category_names: Sequence[str],
    exclude_normal: bool = False,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict[str, float]:
    """mAP (x100) per IoU threshold plus their average, keys "0.1".."0.5" and "avg".

    ``frame_scores[i]`` and ``category_weights[i]`` ([C] or None = uniform) belong to ``gt.videos[i]``;
    ``category_names`` names the C columns of the weights.
    """
    names = list(category_names)
    classes = ([] if exclude_normal else [NORMAL]) + names
    column_of = {NORMAL: 0} | {name: 1 + i for i, name in enumerate(names)}
    uniform = np.full(len(names), 1.0 / max(len(names), 1))

    per_class_pred: dict[int, list[tuple[np.ndarray, ...]]] = {column_of[c]: [] for c in classes}
    per_class_gt: dict[int, list[tuple[np.ndarray, ...]]] = {column_of[c]: [] for c in classes}
    for i, video in enumerate(gt.videos):
        if exclude_normal and not video.is_anomalous:
            continue
        length = int(gt.lengths[i])
        if video.is_anomalous:
            if video.category not in column_of:
                raise ValueError(f"{video.name}: category {video.category!r} is not among {names}")
            intervals = video.clipped_intervals(length)
            gt_column = column_of[video.category]
        else:
            intervals, gt_column = [(0, length)], 0
        if intervals and gt_column in per_class_gt:
            s, e = np.asarray(intervals, dtype=np.int64).T
            per_class_gt[gt_column].append((np.full(s.size, i), s, e))
        if length == 0:
            continue
        weights = category_weights[i]
        weights = uniform if weights is None else np.asarray(weights, np.float64)
        col, start, end, score = video_segments(class_curves(frame_scores[i][:length], weights))
        for column in np.unique(col):
            if column not in per_class_pred:
                continue
            sel = col == column
            kept = temporal_nms(start[sel], end[sel], score[sel])
            per_class_pred[column].append(
                (np.full(kept.size, i), start[sel][kept], end[sel][kept], score[sel][kept])
            )

    def gather(parts: list[tuple[np.ndarray, ...]], fields: int) -> ClassSegments:
        if not parts:
            return ClassSegments.empty()
        arrays = [np.concatenate([p[k] for p in parts]) for k in range(fields)]
        return ClassSegments(*arrays) if fields == 4 else ClassSegments(*arrays, np.zeros(arrays[0].size))

    evaluated = []
    for name in classes:
        column = column_of[name]
        if not per_class_gt[column]:
            log.debug("class %s has no ground-truth interval in this set; left out of the mAP", name)
            continue
        evaluated.append((gather(per_class_pred[column], 4), gather(per_class_gt[column], 3)))
    result: dict[str, float] = {}
    for threshold in iou_thresholds:
        aps = [average_precision(pred, truth, threshold) for pred, truth in evaluated]
        result[f"{threshold:g}"] = 100.0 * float(np.mean(aps)) if aps else 0.0
    result["avg"] = float(np.mean([result[f"{t:g}"] for t in iou_thresholds]))
    return result
