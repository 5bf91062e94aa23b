import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from model.evaluation.ground_truth import NORMAL, VideoTruth, read_annotations
from model.evaluation.metrics import compute_metrics, frame_ap, frame_ap_trapz, frame_auc, frame_scores_of
from tests.shared_data import UCF_CRIME_ROOT

ANNOTATIONS = UCF_CRIME_ROOT / "test_annotations.txt"


def _perfect_snippet_scores(video: VideoTruth, snippets: int) -> np.ndarray:
    return video.frame_labels(16 * snippets).reshape(snippets, 16).max(axis=1).astype(float)


def test_hand_computed_ap_and_trapezoid():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # Step-wise AP: precision at each true positive (1/1, 2/3) averaged over the 2 positives.
    assert frame_ap(labels, scores) == pytest.approx((1 + 2 / 3) / 2)
    assert frame_ap(labels, scores) == pytest.approx(average_precision_score(labels, scores))
    # PR points (recall, precision): (0, 1) (.5, 1) (.5, .5) (1, 2/3) (1, .5) -> trapezoids 0.5 + 0.5 * (0.5 + 2/3) / 2
    assert frame_ap_trapz(labels, scores) == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    assert frame_auc(labels, scores) == pytest.approx(0.75)
    assert frame_auc(np.zeros(3), scores[:3]) is None


def test_frame_scores_repeat_and_cut():
    assert frame_scores_of(np.array([0.1, 0.9]), 20).tolist() == [0.1] * 16 + [0.9] * 4


def test_perfect_scores_give_perfect_frame_metrics():
    truth = [
        VideoTruth("a", "Fire", ((20, 60),), 100),
        VideoTruth("b", NORMAL, (), 64),
        VideoTruth("c", "Theft", ((0, 16), (80, 96)), 96),
    ]
    scores = {t.name: _perfect_snippet_scores(t, t.reference_snippets()) for t in truth}
    # Snippet granularity: the anomalous interval [20, 60) is covered by snippets [16, 64).
    truth[0] = VideoTruth("a", "Fire", ((16, 64),), 100)
    m = compute_metrics(truth, scores)
    assert m["auc"] == 1.0 and m["ano_auc"] == 1.0 and m["ap"] == 1.0 and m["ap_trapz"] == pytest.approx(1.0)
    assert m["num_videos"] == 3 and m["num_frames"] == 100 + 64 + 96
    assert m["num_anomalous_frames"] == 48 + 32


def test_ano_auc_ignores_normal_videos():
    truth = [VideoTruth("a", "Fire", ((16, 32),), 48), VideoTruth("n", NORMAL, (), 32)]
    scores = {"a": np.array([0.1, 0.5, 0.1]), "n": np.array([0.9, 0.9])}
    m = compute_metrics(truth, scores)
    assert m["ano_auc"] == 1.0
    assert m["auc"] == 0.5  # half the negatives (the normal video) outscore the anomaly


def test_missing_and_bad_scores_are_rejected():
    truth = [VideoTruth("a", "Fire", ((0, 16),), 32)]
    with pytest.raises(ValueError, match="no scores"):
        compute_metrics(truth, {})
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(truth, {"a": np.array([np.nan, 1.0])})
    with pytest.raises(ValueError, match="distribution"):
        compute_metrics(truth, {"a": np.ones(2)}, {"a": np.ones(3)}, ["Fire"])


@pytest.mark.skipif(not ANNOTATIONS.is_file(), reason="UCF-Crime annotations absent")
def test_full_ucf_crime_protocol_is_fast_and_oracle_scores_are_near_perfect():
    truth = read_annotations(ANNOTATIONS)
    names = sorted({t.category for t in truth if t.is_anomalous})
    scores, dists = {}, {}
    for t in truth:
        snippets = t.reference_snippets()
        scores[t.name] = _perfect_snippet_scores(t, snippets)
        if t.is_anomalous:
            dists[t.name] = np.eye(len(names))[names.index(t.category)]
    start = time.perf_counter()
    m = compute_metrics(truth, scores, dists, names, exclude_normal=True)
    elapsed = time.perf_counter() - start
    assert elapsed < 10
    assert m["num_frames"] == 1_111_808 and m["num_videos"] == 290
    # Snippet-level scores blur interval edges by < 16 frames: frame AUC is not exactly 1 but very close.
    assert m["auc"] > 0.995 and m["ano_auc"] > 0.99
    # With the right category and one segment per interval, every interval is found at IoU 0.5.
    assert m["map_iou"]["0.5"] > 95 and m["map_iou"]["avg"] > 95
    rng = np.random.default_rng(0)
    noisy = {k: rng.random(v.size) for k, v in scores.items()}
    chance = compute_metrics(truth, noisy)
    assert 0.45 < chance["auc"] < 0.55 and chance["map_iou"]["avg"] < 5
