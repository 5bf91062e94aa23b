"""MoTAR's adaptive temporal shift, as pure tensor ops.

y_t = [ x_{t-1}[0:s_t], x_{t+1}[s_t:2 s_t], x_t[2 s_t:D] ] with x_0 = x_{T+1} = 0.

No Python loop over batch, time or channels and no host sync, so it runs on the device, scripts, traces and
exports to ONNX. floor() has no gradient; `straight_through_shift` keeps the exact integer shift in the forward
pass and passes a gradient to the continuous shift size through a soft channel mask.
"""

from __future__ import annotations

import torch
from torch import Tensor


def neighbours(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x_{t-1}, x_{t+1}) for every t, zero beyond both ends of the sequence."""
    pad = torch.zeros_like(x[:, :1])
    prev = torch.cat([pad, x[:, :-1]], dim=1)
    nxt = torch.cat([x[:, 1:], pad], dim=1)
    return prev, nxt


def shift_sizes(ratio: Tensor, feature_dim: int, fold_div: int) -> Tensor:
    """s_t = floor(r_t * D / K) as an integer tensor [B, T]."""
    return torch.floor(ratio * (float(feature_dim) / float(fold_div))).to(torch.long)


def adaptive_temporal_shift(x: Tensor, shift: Tensor) -> Tensor:
    """x [B, T, D]; shift [B, T] integer channel counts s_t (0 <= 2 s_t <= D)."""
    prev, nxt = neighbours(x)
    channel = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
    s = shift.to(channel.dtype).unsqueeze(-1)
    return torch.where(channel < s, prev, torch.where(channel < 2 * s, nxt, x))


def soft_temporal_shift(x: Tensor, size: Tensor, temperature: float = 1.0) -> Tensor:
    """Differentiable relaxation of the shift: channel masks are sigmoid ramps around the continuous size."""
    prev, nxt = neighbours(x)
    channel = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype).view(1, 1, -1) + 0.5
    s = size.to(x.dtype).unsqueeze(-1)
    to_prev = torch.sigmoid((s - channel) / temperature)
    to_next_or_prev = torch.sigmoid((2 * s - channel) / temperature)
    return to_prev * prev + (to_next_or_prev - to_prev) * nxt + (1 - to_next_or_prev) * x


def straight_through_shift(x: Tensor, ratio: Tensor, fold_div: int, temperature: float = 1.0) -> Tensor:
    """Exact integer shift forward; backward, x gets the exact shift's gradient and the ratio the soft one's."""
    size = ratio * (float(x.shape[-1]) / float(fold_div))
    hard = adaptive_temporal_shift(x, torch.floor(size).to(torch.long))
    soft = soft_temporal_shift(x.detach(), size, temperature)
    return hard + (soft - soft.detach())
