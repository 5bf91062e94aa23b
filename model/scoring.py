"""Running a head over one video's snippet features: its full length at once, chunked for very long videos
(offline analysis and evaluation), or through the live service's sliding window (`live_window_scores`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from model.ensemble import HeadModel

# Attention cost grows with T^2: very long videos are scored in equal chunks of at most this many snippets.
MAX_SNIPPETS_PER_PASS = 4096


@dataclass(frozen=True)
class VideoScores:
    scores: torch.Tensor  # [T] snippet anomaly scores
    category_weights: torch.Tensor  # [C] soft category distribution of the video
    category_probs: torch.Tensor  # [C] per-category anomaly probability


@torch.no_grad()
def score_features(
    model: HeadModel, features: torch.Tensor, max_snippets: int = MAX_SNIPPETS_PER_PASS
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


def pad_live_window(windows: torch.Tensor, min_window: int) -> torch.Tensor:
    """Start-up padding of live windows: windows [B, n, D] that hold fewer than `min_window` snippets (a stream's
    first ones) are left-padded with copies of their first snippet to [B, min_window, D]; longer ones are returned
    as they are. The newest snippet stays last, so the scores read at positions -1 and -2 belong to the same
    snippets. Only valid for start-up windows, which begin at the stream's first snippet."""
    missing = min_window - windows.shape[1]
    if missing <= 0:
        return windows
    return torch.cat([windows[:, :1].expand(-1, missing, -1), windows], dim=1)


@torch.no_grad()
def live_window_scores(
    model: HeadModel,
    features: torch.Tensor,
    window: int,
    batch: int = 256,
    min_window: int = 1,
    startup_lookahead: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The final score and category distribution each snippet gets from the live service, from features [T, D].

    Live (`service.live.scheduler`), every new snippet runs the head over the stream's last `window` snippets; the
    window ending at snippet t + 1 gives snippet t its final score (position -2: one snippet of look-ahead) and the
    category weights of that message. The last snippet only ever gets a provisional score (position -1 of the
    window ending at it). With `startup_lookahead` k > 2, a stream's first k - 1 snippets instead wait for the
    window of its first k snippets, which gives them their final scores at once (positions 0 .. k - 2); a video of
    fewer than k snippets gets none, and each snippet's last word is then its provisional score. Returns scores
    [T] and category weights [T, C]. Full windows run as one batch (`batch` at a time); only the start-up
    windows, shorter than `window`, run one by one, each left-padded to `min_window` snippets
    (`pad_live_window`). `min_window` 1 and `startup_lookahead` 2, the defaults, are what the live service does:
    the others were tried in stages 8b and 8c of the default model's card. `model` may also be an exported head
    (`ExportedHead`): anything called as a head is. Raises `ValueError` for a window under 2 snippets, a
    `min_window` outside 1 .. window, a `startup_lookahead` outside 2 .. window, or a video of none.
    """
    if window < 2:
        raise ValueError(f"the live window holds at least 2 snippets, got {window}")
    if not 1 <= min_window <= window:
        raise ValueError(f"min_window must be within 1 .. {window} (the window), got {min_window}")
    if not 2 <= startup_lookahead <= window:
        raise ValueError(
            f"startup_lookahead must be within 2 .. {window} (the window), got {startup_lookahead}"
        )
    if features.shape[0] == 0:
        raise ValueError("no snippets to score")
    t_total, k = features.shape[0], startup_lookahead
    score_rows, weight_rows = [], []
    if t_total < k:
        # No final score yet: every snippet's last word is its provisional one.
        for end in range(1, t_total + 1):
            out = model(pad_live_window(features[:end].unsqueeze(0), min_window))
            score_rows.append(out.scores[:, -1])
            weight_rows.append(out.category_weights)
        return torch.cat(score_rows).float(), torch.cat(weight_rows).float()
    # The window ending at the last snippet: its provisional score is that snippet's last word.
    last = model(pad_live_window(features[max(0, t_total - window) :].unsqueeze(0), min_window))
    # The window of the first k snippets gives snippets 0 .. k - 2 their final scores.
    first = model(pad_live_window(features[:k].unsqueeze(0), min_window))
    score_rows.append(first.scores[0, first.scores.shape[1] - k : -1])
    weight_rows.append(first.category_weights.expand(k - 1, -1))
    # Windows ending (exclusive) at k + 1 .. T give snippets k - 1 .. T - 2 their final scores, at position -2.
    for end in range(k + 1, min(window, t_total + 1)):
        out = model(pad_live_window(features[:end].unsqueeze(0), min_window))
        score_rows.append(out.scores[:, -2])
        weight_rows.append(out.category_weights)
    if t_total >= window:
        windows = features.unfold(0, window, 1).transpose(1, 2)  # [T - W + 1, W, D], ending at W .. T
        windows = windows[1:] if k == window else windows  # the first already scored above
        for a in range(0, windows.shape[0], batch):
            out = model(windows[a : a + batch])
            score_rows.append(out.scores[:, -2])
            weight_rows.append(out.category_weights)
    score_rows.append(last.scores[:, -1])
    weight_rows.append(last.category_weights)
    return torch.cat(score_rows).float(), torch.cat(weight_rows).float()
