"""A localisation criterion that needs video-level labels only: held-out normal and anomalous clips spliced in
time and scored as one video.

The video-level criteria of weak supervision (ranking held-out clips by their MIL score, or labelling every
snippet with its clip's label) cannot tell a head that localises the anomaly from one that raises every snippet
of an anomalous clip through its temporal context (MoTAR's Transformer, CORE's clip-wide injection). A normal
clip stays normal whatever it is spliced to, so in the spliced video its snippets are labelled 0 and the
anomalous clip's 1; a head that spreads the anomaly over its context scores the normal part high and loses AUC.
The anomalous part keeps its weak label (it may contain normal snippets), so the figure is a lower bound on the
localisation it measures. This project's own criterion (no published source); used for model selection on
training clips only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from model.data.datasets import splice


def spliced_videos(
    normal: Sequence[np.ndarray], anomalous: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every (normal, anomalous) pair of snippet features ([T, D] each) spliced both ways: normal then
    anomalous, and anomalous then normal. Returns (features [T1 + T2, D], snippet labels [T1 + T2] 0/1)."""
    videos = []
    for a in anomalous:
        for n in normal:
            for first, second, first_label in ((n, a, 0), (a, n, 1)):
                labels = np.concatenate(
                    [np.full(len(first), first_label), np.full(len(second), 1 - first_label)]
                )
                videos.append((splice(first, second), labels))
    return videos


def splice_metrics(scored: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """From (snippet scores [T], snippet labels [T]) of spliced videos: `splice_snippet_auc` (ROC-AUC over all
    their snippets pooled) and `splice_normal_mean` (mean score of the normal parts, in [0, 1])."""
    scores = np.concatenate([np.asarray(s, dtype=np.float64) for s, _ in scored])
    labels = np.concatenate([np.asarray(y) for _, y in scored])
    if labels.min() == labels.max():
        raise ValueError("spliced videos need both normal and anomalous parts")
    return {
        "splice_snippet_auc": float(roc_auc_score(labels, scores)),
        "splice_normal_mean": float(scores[labels == 0].mean()),
    }


def score_spliced(
    score: Callable[[np.ndarray], np.ndarray], normal: Sequence[np.ndarray], anomalous: Sequence[np.ndarray]
) -> dict[str, float]:
    """`splice_metrics` of `score` (features [T, D] -> snippet scores [T]) over every spliced pair."""
    return splice_metrics([(score(x), y) for x, y in spliced_videos(normal, anomalous)])
