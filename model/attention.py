"""Multi-head attention and the Transformer encoder layer used by MoTAR and CORE.

Written on scaled_dot_product_attention rather than nn.MultiheadAttention so eager, TorchScript and ONNX
all run the same graph (no fused fast path that export cannot see). Parameter layout matches
nn.MultiheadAttention (packed q/k/v projection + output projection), so the paper's MoTAR size (11.03 M
parameters at D=768) holds.
"""

from __future__ import annotations

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

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """query [B, Tq, D], key/value [B, Tk, D] -> [B, Tq, D]."""
        dim = self.heads * self.head_dim
        w_q, w_k, w_v = self.in_proj.weight.split(dim, dim=0)
        b_q, b_k, b_v = self.in_proj.bias.split(dim, dim=0)
        q = self._split(F.linear(query, w_q, b_q))
        k = self._split(F.linear(key, w_k, b_k))
        v = self._split(F.linear(value, w_v, b_v))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
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

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.drop1(self.attn(x, x, x)))
        return self.norm2(x + self.drop2(self.ff(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [TransformerEncoderLayer(dim, heads, ff_dim, dropout) for _ in range(layers)]
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def init_like_torch(module: nn.Module) -> None:
    """Xavier-uniform packed projections, as nn.MultiheadAttention initialises them."""
    for m in module.modules():
        if isinstance(m, MultiHeadAttention):
            nn.init.xavier_uniform_(m.in_proj.weight)
            nn.init.zeros_(m.in_proj.bias)
            nn.init.zeros_(m.out_proj.bias)


__all__ = ["MultiHeadAttention", "TransformerEncoder", "TransformerEncoderLayer", "init_like_torch"]
