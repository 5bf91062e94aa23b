"""CORE: soft category classification and category-prototype injection (spec section CORE)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attention import MultiHeadAttention
from model.config import RefineVADConfig, topk_count


class Projector(nn.Module):
    """P: Linear(D -> d_proj) + BatchNorm + ReLU + Dropout, applied per snippet."""

    def __init__(self, dim: int, proj_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, proj_dim)
        self.norm = nn.BatchNorm1d(proj_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear(x)
        # BatchNorm1d wants channels second: [B, d_proj, T]
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        return self.dropout(F.relu(h))


class NoInjection(nn.Module):
    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        return x


class LinearInjection(nn.Module):
    """F = X + Linear(v), the appendix's weakest variant."""

    def __init__(self, dim: int, emb_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(emb_dim, dim)

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        return x + self.proj(v).unsqueeze(1)


class AddNormFFNInjection(nn.Module):
    """I = LayerNorm(X + proj(v)); F = I + FFN(I)."""

    def __init__(self, dim: int, emb_dim: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Linear(emb_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        i = self.norm(x + self.proj(v).unsqueeze(1))
        return i + self.ffn(i)


class CrossAttentionInjection(nn.Module):
    """F = X + CrossAttn(q = proj(v), K = V = X): one global query whose output is added to every snippet."""

    def __init__(self, dim: int, emb_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Linear(emb_dim, dim)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        nn.init.xavier_uniform_(self.attn.in_proj.weight)
        nn.init.zeros_(self.attn.in_proj.bias)

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        q = self.query(v).unsqueeze(1)
        return x + self.attn(q, x, x)


class COREOutput(NamedTuple):
    features: Tensor  # F [B, T, D]
    rough_logits: Tensor  # [B, T]
    category_logits: Tensor  # [B, C, 2]
    category_probs: Tensor  # [B, C]
    category_weights: Tensor  # [B, C]
    category_embedding: Tensor  # v [B, d_emb] (with the ground-truth prototype added while training)


class CORE(nn.Module):
    def __init__(self, config: RefineVADConfig) -> None:
        super().__init__()
        c, dim = config.num_categories, config.feature_dim
        self.num_categories = c
        self.tau = config.tau
        self.soft_weights = config.soft_weights
        self.topk_pooling = config.pooling == "topk"
        self.topk_divisor = config.topk_divisor
        self.projector = Projector(dim, config.proj_dim, config.dropout)
        self.scorer = nn.Linear(config.proj_dim, 1)
        self.classifier = nn.Sequential(
            nn.Linear(config.proj_dim, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, 2 * c),
        )
        self.prototypes = nn.Parameter(torch.randn(c, config.emb_dim) * 0.02)
        if config.injection == "cross_attention":
            self.injection = CrossAttentionInjection(dim, config.emb_dim, config.attn_heads, config.dropout)
        elif config.injection == "addnorm_ffn":
            self.injection = AddNormFFNInjection(dim, config.emb_dim, config.transformer_ff, config.dropout)
        elif config.injection == "linear":
            self.injection = LinearInjection(dim, config.emb_dim)
        else:
            self.injection = NoInjection()

    def score(self, x: Tensor) -> Tensor:
        """Shared projector + scorer: per-snippet logits [B, T]."""
        return self.scorer(self.projector(x)).squeeze(-1)

    def pool(self, projected: Tensor, rough_logits: Tensor) -> Tensor:
        if self.topk_pooling:
            k = min(rough_logits.shape[1], topk_count(rough_logits.shape[1], self.topk_divisor))
            idx = rough_logits.topk(k, dim=1).indices
            picked = projected.gather(1, idx.unsqueeze(-1).expand(-1, -1, projected.shape[-1]))
            return picked.mean(dim=1)
        alpha = torch.softmax(rough_logits, dim=1)
        return (alpha.unsqueeze(-1) * projected).sum(dim=1)

    def category_weights(self, category_logits: Tensor, category_probs: Tensor) -> Tensor:
        """Equation 6: uniform 1/C if no category reaches tau, else softmax over the anomalous logits."""
        anomalous = category_logits[..., 1]
        passed = (category_probs >= self.tau).any(dim=-1, keepdim=True)
        if self.soft_weights:
            chosen = torch.softmax(anomalous, dim=-1)
        else:
            chosen = F.one_hot(anomalous.argmax(dim=-1), self.num_categories).to(anomalous.dtype)
        uniform = torch.full_like(anomalous, 1.0 / self.num_categories)
        return torch.where(passed, chosen, uniform)

    def forward(self, x: Tensor, category: torch.Tensor | None = None) -> COREOutput:
        projected = self.projector(x)
        rough = self.scorer(projected).squeeze(-1)
        pooled = self.pool(projected, rough)
        logits = self.classifier(pooled).reshape(x.shape[0], self.num_categories, 2)
        probs = torch.softmax(logits, dim=-1)[..., 1]
        weights = self.category_weights(logits, probs)
        v = weights @ self.prototypes
        if self.training and category is not None:
            # v_train = v + e_y for anomalous videos; normal videos (category -1) add nothing.
            is_anomalous = (category >= 0).unsqueeze(-1).to(v.dtype)
            v = v + self.prototypes[category.clamp(min=0)] * is_anomalous
        features = self.injection(x, v)
        return COREOutput(features, rough, logits, probs, weights, v)
