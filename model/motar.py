"""MoTAR: motion-aware adaptive temporal shift followed by a temporal Transformer (spec section MoTAR)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attention import TransformerEncoder, init_like_torch
from model.config import RefineVADConfig
from model.shift import adaptive_temporal_shift, shift_sizes, straight_through_shift
from model.shift_kernels import REFERENCE, run_shift


def motion_variance(x: Tensor) -> Tensor:
    """v_t = (d_t - mean_c d_t)^2 with d_t = x_t - x_{t-1}, d_1 = 0; its channel mean is Var(d_t)."""
    d = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
    return (d - d.mean(dim=-1, keepdim=True)).pow(2)


class ShiftPredictor(nn.Module):
    """r_t = sigmoid(W3 gelu(W2 gelu(W1 v_t))), widths D -> 32 -> 16 -> 1."""

    def __init__(self, dim: int, hidden: tuple[int, int]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], 1)

    def forward(self, v: Tensor) -> Tensor:
        return torch.sigmoid(self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(v)))))).squeeze(-1)


class MoTAR(nn.Module):
    def __init__(self, config: RefineVADConfig) -> None:
        super().__init__()
        self.feature_dim = config.feature_dim
        self.fold_div = config.fold_div
        self.ste = config.shift_grad == "ste"
        self.ste_temperature = config.shift_ste_temperature
        self.shift_predictor = ShiftPredictor(config.feature_dim, config.shift_hidden)
        self.transformer = TransformerEncoder(
            config.feature_dim,
            config.transformer_heads,
            config.transformer_ff,
            config.dropout,
            config.transformer_layers,
            config.attention_window,
        )
        init_like_torch(self.transformer)
        # Inference shift kernel (model.shift_kernels); only a start-up check selects anything but the reference.
        self.shift_kernel: str = REFERENCE

    def shift_ratio(self, x: Tensor) -> Tensor:
        return self.shift_predictor(motion_variance(x))

    def forward(self, x: Tensor) -> Tensor:
        ratio = self.shift_ratio(x)
        if self.ste and self.training:
            shifted = straight_through_shift(x, ratio, self.fold_div, self.ste_temperature)
        else:
            sizes = shift_sizes(ratio, self.feature_dim, self.fold_div)
            if torch.jit.is_scripting():
                shifted = adaptive_temporal_shift(x, sizes)  # exported graphs keep the tensor ops
            else:
                shifted = run_shift(self.shift_kernel, x, sizes)
        return self.transformer(shifted)
