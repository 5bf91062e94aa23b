"""RefineVAD: features [B, T, D] -> MoTAR -> CORE -> per-snippet anomaly scores and category distribution."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from model.config import RefineVADConfig
from model.core import CORE
from model.motar import MoTAR


class RefineVADOutput(NamedTuple):
    logits: Tensor  # [B, T] final snippet logits
    scores: Tensor  # [B, T] sigmoid(logits)
    rough_logits: Tensor  # [B, T] CORE's rough scorer on the MoTAR features
    category_logits: Tensor  # [B, C, 2] (normal, anomalous) logits per category
    category_probs: Tensor  # [B, C] per-category anomaly probability
    category_weights: Tensor  # [B, C] soft category distribution (sums to 1)
    category_embedding: Tensor  # [B, d_emb] the soft category embedding v


def standardization_stats(
    total: Tensor, total_sq: Tensor, count: int, eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (unbiased) std from sums of x and x^2 ([D], float64) over `count` snippets. Channels
    that never vary get std 1 (they would otherwise divide by ~0). Raises `ValueError` below 2 snippets."""
    if count < 2:
        raise ValueError(f"standardisation needs at least 2 training snippets, got {count}")
    mean = total / count
    var = (total_sq / count - mean * mean).clamp(min=0.0) * count / (count - 1)
    std = var.sqrt()
    return mean, torch.where(std > eps, std, torch.ones_like(std))


class FeatureStandardizer(nn.Module):
    """x [B, T, D] -> (x - mean) / std per channel; mean and std [D] are buffers fitted on training snippets."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, total: Tensor, total_sq: Tensor, count: int, eps: float = 1e-6) -> None:
        """From per-channel sums of x and x^2 (float64, [D]) over `count` snippets (`standardization_stats`)."""
        mean, std = standardization_stats(total, total_sq, count, eps)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class RefineVAD(nn.Module):
    def __init__(self, config: RefineVADConfig) -> None:
        super().__init__()
        self.config = config
        self.input_norm = (
            FeatureStandardizer(config.feature_dim) if config.input_norm == "standardize" else nn.Identity()
        )
        self.motar = MoTAR(config) if config.use_motar else nn.Identity()
        self.core = CORE(config)
        # Learnable head of the GMM smoothing loss: moves the anomalous component's mean by category (losses.py).
        self.gmm_mean_head = nn.Linear(config.emb_dim, 1)
        nn.init.zeros_(self.gmm_mean_head.weight)
        nn.init.zeros_(self.gmm_mean_head.bias)

    def forward(self, x: Tensor, category: torch.Tensor | None = None) -> RefineVADOutput:
        """x [B, T, D] (T >= 1); category LongTensor [B] (-1 = normal), used only in training."""
        temporal = self.motar(self.input_norm(x))
        core = self.core(temporal, category)
        logits = self.core.score(core.features)
        return RefineVADOutput(
            logits,
            torch.sigmoid(logits),
            core.rough_logits,
            core.category_logits,
            core.category_probs,
            core.category_weights,
            core.category_embedding,
        )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
