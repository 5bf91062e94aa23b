import numpy as np
import pytest

from model.evaluation.detection_map import (
    ClassSegments,
    average_precision,
    detection_map,
    temporal_nms,
    video_segments,
)
from model.evaluation.ground_truth import NORMAL, VideoTruth, build_ground_truth

CATS = ["Fire", "Theft"]


def _map(truth, frame_scores, weights, exclude_normal=False):
    gt = build_ground_truth(
        truth, {t.name: -(-len(s) // 16) for t, s in zip(truth, frame_scores, strict=True)}
    )
    return detection_map(gt, frame_scores, weights, CATS, exclude_normal=exclude_normal)


def test_ap_counts_precision_at_each_true_positive():
    gt = ClassSegments(np.array([0, 1]), np.array([0, 0]), np.array([10, 10]), np.zeros(2))
    pred = ClassSegments(
        np.array([0, 0, 1]), np.array([50, 0, 0]), np.array([60, 10, 10]), np.array([0.9, 0.8, 0.7])
    )
    # ranks: FP, TP (precision 1/2), TP (precision 2/3)
    assert average_precision(pred, gt, 0.5) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # A ground truth is matched at most once: a duplicate detection is a false positive.
    dup = ClassSegments(np.array([0, 0]), np.array([0, 0]), np.array([10, 10]), np.array([0.9, 0.8]))
    assert average_precision(dup, gt, 0.5) == pytest.approx(1 / 2)
    assert average_precision(ClassSegments.empty(), gt, 0.5) == 0.0


def test_video_segments_threshold_runs_and_score():
    curve = np.zeros((32, 1))
    curve[8:16, 0] = 1.0
    curve[20, 0] = 1.0  # a single-frame run is dropped
    col, start, end, score = video_segments(curve)
    assert col.tolist() == [0] and start.tolist() == [8] and end.tolist() == [16]
    # run max 1 + 0.7 * mean of the top 32 // 16 = 2 frames (both 1)
    assert score[0] == pytest.approx(1.7)
    flat = np.full((32, 1), 0.5)
    assert video_segments(flat)[0].size == 0  # nothing is strictly above max - 0.6 * 0


def test_nms_keeps_disjoint_and_suppresses_overlaps():
    s, e = np.array([0, 20, 1]), np.array([10, 30, 10])
    assert sorted(temporal_nms(s, e, np.array([0.5, 0.4, 0.9])).tolist()) == [1, 2]
    assert temporal_nms(s[:2], e[:2], np.array([0.1, 0.2])).tolist() == [1, 0]


def test_perfect_localisation_scores_100():
    truth = [VideoTruth("a", "Fire", ((32, 64),), 128), VideoTruth("b", "Theft", ((0, 48),), 96)]
    scores = [np.zeros(128), np.zeros(96)]
    scores[0][32:64] = 1
    scores[1][0:48] = 1
    weights = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    result = _map(truth, scores, weights, exclude_normal=True)
    assert result == {"0.1": 100.0, "0.2": 100.0, "0.3": 100.0, "0.4": 100.0, "0.5": 100.0, "avg": 100.0}


def test_iou_thresholds_select_partial_overlaps():
    truth = [VideoTruth("a", "Fire", ((0, 48),), 96)]
    score = np.zeros(96)
    score[0:16] = 1  # IoU with [0, 48) = 1/3
    result = _map(truth, [score], [np.array([1.0, 0.0])], exclude_normal=True)
    assert [result[k] for k in ("0.1", "0.2", "0.3", "0.4", "0.5")] == [100.0, 100.0, 100.0, 0.0, 0.0]
    assert result["avg"] == pytest.approx(60.0)


def test_normal_class_and_wrong_category():
    truth = [VideoTruth("a", "Fire", ((0, 32),), 64), VideoTruth("n", NORMAL, (), 64)]
    a = np.zeros(64)
    a[:32] = 1
    n = np.concatenate((np.full(48, 0.1), np.full(16, 0.3)))  # Normal curve 0.9 for 48 frames then 0.7
    # Category weights on the wrong class: Fire (ground truth in "a") gets no true positive.
    # Normal: video "a" yields a Normal segment [32, 64) scored 1 + 0.7 * 1 = 1.7 (a false positive, ranked first);
    # video "n" yields [0, 48) scored 0.9 + 0.7 * 0.9 (IoU 0.75 with [0, 64)): AP = 1/2 at IoU 0.1..0.5.
    # Theft has no ground truth and is left out: mAP = (1/2 + 0) / 2.
    result = _map(truth, [a, n], [np.array([0.0, 1.0]), None])
    assert all(result[k] == pytest.approx(25.0) for k in ("0.1", "0.3", "0.5", "avg"))


def reference_map(curves, gt_segments, classes, th):
    """Loop-based transcription of the public evaluation, used as an oracle."""
    c_score = []
    preds = []
    for p in curves:
        k = int(p.shape[0] / 16)
        c_s = np.mean(-np.sort(-p, axis=0)[:k], axis=0)
        c_score.append(c_s)
        preds.append(p * (c_s > 0))
    aps = []
    for c in classes:
        segment_predict = []
        for i, p in enumerate(preds):
            tmp = p[:, c]
            threshold = np.max(tmp) - (np.max(tmp) - np.min(tmp)) * 0.6
            vid = np.concatenate([np.zeros(1), (tmp > threshold).astype("float32"), np.zeros(1)])
            diff = [vid[t] - vid[t - 1] for t in range(1, len(vid))]
            s = [t for t, d in enumerate(diff) if d == 1]
            e = [t for t, d in enumerate(diff) if d == -1]
            for j in range(len(s)):
                if e[j] - s[j] >= 2:
                    segment_predict.append([i, s[j], e[j], np.max(tmp[s[j] : e[j]]) + 0.7 * c_score[i][c]])
        segment_predict = sorted(segment_predict, key=lambda x: -x[3])
        segment_gt = [[i, s, e] for i, cls, s, e in gt_segments if cls == c]
        gtpos = len(segment_gt)
        if gtpos == 0:
            continue
        tp = []
        for pred in segment_predict:
            matched, best_iou, best_j = False, 0.0, -1
            for j, g in enumerate(segment_gt):
                if pred[0] == g[0]:
                    a, b = set(range(g[1], g[2])), set(range(pred[1], pred[2]))
                    iou = len(a & b) / len(a | b)
                    if iou >= th:
                        matched = True
                        if iou > best_iou:
                            best_iou, best_j = iou, j
            if matched:
                del segment_gt[best_j]
            tp.append(float(matched))
        tp = np.array(tp)
        aps.append(np.sum(np.cumsum(tp) / np.arange(1, len(tp) + 1) * tp) / gtpos if len(tp) else 0.0)
    return 100 * np.mean(aps)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("exclude_normal", [False, True])
def test_matches_loop_based_reference(seed, exclude_normal):
    rng = np.random.default_rng(seed)
    truth, scores, weights = [], [], []
    for i in range(12):
        snippets = int(rng.integers(4, 20))
        frames = 16 * snippets - int(rng.integers(0, 16))
        anomalous = i % 3 != 0
        if anomalous:
            s = int(rng.integers(0, frames - 20))
            intervals = ((s, s + int(rng.integers(10, frames - s))),)
            if rng.random() < 0.5 and intervals[0][1] + 20 < frames:
                s2 = int(rng.integers(intervals[0][1] + 1, frames - 5))
                intervals += ((s2, s2 + 5),)
            truth.append(VideoTruth(f"v{i}", CATS[i % 2], intervals, frames))
        else:
            truth.append(VideoTruth(f"v{i}", NORMAL, (), frames))
        snippet = np.clip(
            rng.random(snippets) * 0.5 + 0.5 * truth[-1].frame_labels(16 * snippets)[::16], 0, 1
        )
        scores.append(np.repeat(snippet, 16)[:frames])
        weights.append(rng.dirichlet(np.ones(2)) if rng.random() < 0.7 else None)
    result = _map(truth, scores, weights, exclude_normal=exclude_normal)

    curves, gt_segments = [], []
    for t, s, w in zip(truth, scores, weights, strict=True):
        if exclude_normal and not t.is_anomalous:
            continue
        w = np.full(2, 0.5) if w is None else w
        curves.append(np.concatenate((1 - s[:, None], s[:, None] * w[None, :]), axis=1))
        idx = len(curves) - 1
        if t.is_anomalous:
            gt_segments += [(idx, 1 + CATS.index(t.category), a, min(b, len(s))) for a, b in t.intervals]
        else:
            gt_segments.append((idx, 0, 0, len(s)))
    classes = [1, 2] if exclude_normal else [0, 1, 2]
    for th in (0.1, 0.2, 0.3, 0.4, 0.5):
        assert result[f"{th:g}"] == pytest.approx(reference_map(curves, gt_segments, classes, th))
