"""Running a head over one video's full-length features, chunked for very long videos (offline analysis and evaluation)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from model.refinevad import RefineVAD

# Attention cost grows with T^2: very long videos are scored in equal chunks of at most this many snippets.
MAX_SNIPPETS_PER_PASS = 4096


@dataclass(frozen=True)
class VideoScores:
    scores: torch.Tensor  # [T] snippet anomaly scores
    category_weights: torch.Tensor  # [C] soft category distribution of the video
    category_probs: torch.Tensor  # [C] per-category anomaly probability


@torch.no_grad()
def score_features(
    model: RefineVAD, features: torch.Tensor, max_snippets: int = MAX_SNIPPETS_PER_PASS
) -> VideoScores:
    """features [T, D] -> scores [T] and the video's category distribution (mean over chunks when chunked)."""
    t = features.shape[0]
    chunks = -(-t // max_snippets)
    bounds = np.linspace(0, t, chunks + 1).astype(int)
    scores, weights, probs = [], [], []
    for a, b in itertools.pairwise(bounds):
        out = model(features[a:b].unsqueeze(0))
        scores.append(out.scores[0])
        weights.append(out.category_weights[0])
        probs.append(out.category_probs[0])
    return VideoScores(torch.cat(scores), torch.stack(weights).mean(0), torch.stack(probs).mean(0))
