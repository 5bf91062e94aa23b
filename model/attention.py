"""Multi-head attention and the Transformer encoder layer used by MoTAR and CORE.

Written on scaled_dot_product_attention rather than nn.MultiheadAttention so eager, TorchScript and ONNX
all run the same graph (no fused fast path that export cannot see). Parameter layout matches
nn.MultiheadAttention (packed q/k/v projection + output projection), so the paper's MoTAR size (11.03 M
parameters at D=768) holds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, t = x.shape[0], x.shape[1]
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """query [B, Tq, D], key/value [B, Tk, D] -> [B, Tq, D].

        attn_mask: optional bool [Tq, Tk], True where a query may attend (every query needs at least one True).
        """
        dim = self.heads * self.head_dim
        w_q, w_k, w_v = self.in_proj.weight.split(dim, dim=0)
        b_q, b_k, b_v = self.in_proj.bias.split(dim, dim=0)
        q = self._split(F.linear(query, w_q, b_q))
        k = self._split(F.linear(key, w_k, b_k))
        v = self._split(F.linear(value, w_v, b_v))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], dim)
        return self.out_proj(out)


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer (as nn.TransformerEncoderLayer's default): self-attention, then ReLU FFN."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.drop1(self.attn(x, x, x, attn_mask)))
        return self.norm2(x + self.drop2(self.ff(x)))


def band_mask(length: int, window: int, device: torch.device) -> Tensor:
    """Bool [length, length]: True where |i - j| <= window (sliding-window attention, Beltagy et al. 2020,
    "Longformer", section 3.1). Built from tensor ops on the sequence length, so it traces and exports with a
    dynamic length."""
    idx = torch.arange(length, device=device)
    return (idx.unsqueeze(0) - idx.unsqueeze(1)).abs() <= window


class TransformerEncoder(nn.Module):
    """Stack of post-norm encoder layers over [B, T, D] -> [B, T, D].

    window: None = every position attends to every other (the paper's MoTAR); an int w = each position
    attends only to positions within w steps of it, in every layer (so L layers see L * w steps each way).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        layers: int,
        window: int | None = None,
    ) -> None:
        super().__init__()
        if window is not None and window < 1:
            raise ValueError(f"attention window must be >= 1 or None, got {window}")
        self.window = window
        self.layers = nn.ModuleList(
            [TransformerEncoderLayer(dim, heads, ff_dim, dropout) for _ in range(layers)]
        )

    def forward(self, x: Tensor) -> Tensor:
        mask: Tensor | None = None
        window = self.window
        if window is not None:
            mask = band_mask(x.shape[1], window, x.device)
        for layer in self.layers:
            x = layer(x, mask)
        return x


def init_like_torch(module: nn.Module) -> None:
    """Xavier-uniform packed projections, as nn.MultiheadAttention initialises them."""
    for m in module.modules():
        if isinstance(m, MultiHeadAttention):
            nn.init.xavier_uniform_(m.in_proj.weight)
            nn.init.zeros_(m.in_proj.bias)
            nn.init.zeros_(m.out_proj.bias)


__all__ = [
    "MultiHeadAttention",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "band_mask",
    "init_like_torch",
]
