"""Fusion of the RefineVAD head's score with a camera's scene score into the `score` events use.

Rule (`FUSION_RULE`; `python -m bench.fusion_cv` compares the candidates on cameras the head never saw, grouped by
source: the model card's "Fusion of the head's and the scene's scores"):

- no scene model yet (`scene_score` null): the head's score, as before scene models existed;
- the head's scene-familiarity check says the view is unlike the head's training footage: the scene score alone
  (the head's score there is no evidence either way: model.scene_familiarity);
- otherwise the larger of the two ("max"), so an anomaly either one recognises raises an event; "mean" averages.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FusionRule = Literal["max", "mean"]
FUSION_RULE: FusionRule = "max"


def fuse(
    head: np.ndarray,
    scene: np.ndarray | None,
    head_familiar: np.ndarray | None = None,
    rule: FusionRule = FUSION_RULE,
) -> np.ndarray:
    """Per-snippet fused scores `[S]` from head scores `[S]`, scene scores `[S]` (or None: no scene model) and
    the head's familiarity `[S]` bool (None: the head has no familiarity check, so it is trusted)."""
    head = np.asarray(head, np.float64)
    if scene is None:
        return head
    scene = np.asarray(scene, np.float64)
    if scene.shape != head.shape:
        raise ValueError(f"head scores {list(head.shape)} and scene scores {list(scene.shape)} differ")
    both = np.maximum(head, scene) if rule == "max" else (head + scene) / 2.0
    if head_familiar is None:
        return both
    return np.where(np.asarray(head_familiar, bool), both, scene)
