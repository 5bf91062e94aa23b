"""The spliced-clip criterion: a per-snippet scorer is judged as on the clips alone; a scorer that spreads a
clip-level signal over its temporal context is caught."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model.evaluation.splice import score_spliced, splice_metrics, spliced_videos


def _clips():
    rng = np.random.default_rng(0)
    normal = [rng.normal(0, 1, (n, 4)).astype(np.float32) for n in (5, 7)]
    anomalous = [
        rng.normal(0, 1, (n, 4)).astype(np.float32) + np.array([2, 0, 0, 0], np.float32) for n in (6, 3)
    ]
    return normal, anomalous


def test_every_pair_is_spliced_both_ways_with_its_labels():
    normal, anomalous = _clips()
    videos = spliced_videos(normal, anomalous)
    assert len(videos) == 2 * 2 * 2
    x, y = videos[0]  # normal[0] then anomalous[0]
    assert np.array_equal(x, np.concatenate([normal[0], anomalous[0]]))
    assert y.tolist() == [0] * 5 + [1] * 6
    x, y = videos[1]  # anomalous[0] then normal[0]
    assert np.array_equal(x, np.concatenate([anomalous[0], normal[0]]))
    assert y.tolist() == [1] * 6 + [0] * 5


def test_a_per_snippet_scorer_keeps_its_snippet_auc():
    normal, anomalous = _clips()
    per_snippet = lambda x: x[:, 0]  # noqa: E731
    metrics = score_spliced(per_snippet, normal, anomalous)
    alone = roc_auc_score([0] * 12 + [1] * 9, np.concatenate([per_snippet(x) for x in (*normal, *anomalous)]))
    assert metrics["splice_snippet_auc"] == pytest.approx(alone)


def test_a_scorer_that_spreads_its_context_is_caught():
    normal, anomalous = _clips()
    # Every snippet of a video that holds an anomaly gets its maximum: perfect video-level ranking (every spliced
    # video holds one), no localisation.
    spreading = lambda x: np.full(len(x), float(x[:, 0].max() > 1.5))  # noqa: E731
    assert all(spreading(a)[0] == 1.0 for a in anomalous)
    metrics = score_spliced(spreading, normal, anomalous)
    assert metrics["splice_snippet_auc"] == pytest.approx(0.5)
    assert metrics["splice_normal_mean"] == 1.0


def test_both_parts_are_needed():
    with pytest.raises(ValueError, match="both"):
        splice_metrics([(np.zeros(3), np.zeros(3))])
