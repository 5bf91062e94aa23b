"""A fused Triton kernel for MoTAR's adaptive temporal shift, used for inference on CUDA.

The tensor-op version (`model.shift.adaptive_temporal_shift`) builds two shifted copies of x and two channel
masks, then selects: about five passes over [B, T, D] memory. The kernel reads each output element's one
source (x_{t-1}, x_{t+1} or x_t) and writes it once. Forward only: training keeps the tensor-op/STE path,
and TorchScript and ONNX exports keep the tensor ops (the kernel is not part of any exported graph).

Models use it only through `model.shift_kernels` (name `triton`), after the start-up check of `model.acceleration`
found it equal to the reference on the serving device. `adaptive_temporal_shift_auto` dispatches without that
check (benchmarks and tests). Importing this module never fails on a CPU-only install.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import Tensor

from model.shift import adaptive_temporal_shift

log = logging.getLogger(__name__)

try:  # Triton is optional (absent on CPU-only wheels and on macOS).
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

# TRITON_INTERPRET=1 runs kernels on the CPU with numpy; tests use it to check the kernel without a GPU.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_CHANNELS = 256

if triton is not None:

    @triton.jit
    def _shift_kernel(x_ptr, shift_ptr, y_ptr, snippets, channels, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # b * T + t; int64 so row * D cannot overflow
        t = row % snippets
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        in_row = c < channels
        s = tl.load(shift_ptr + row)
        take_prev = c < s
        take_next = (c >= s) & (c < 2 * s)
        base = row * channels
        # Masked loads: beyond either end of the sequence the neighbour is zero.
        prev = tl.load(x_ptr + base - channels + c, mask=in_row & take_prev & (t > 0), other=0.0)
        nxt = tl.load(x_ptr + base + channels + c, mask=in_row & take_next & (t < snippets - 1), other=0.0)
        cur = tl.load(x_ptr + base + c, mask=in_row & (c >= 2 * s), other=0.0)
        y = tl.where(take_prev, prev, tl.where(take_next, nxt, cur))
        tl.store(y_ptr + base + c, y, mask=in_row)


def fused_shift_available(x: Tensor) -> bool:
    """Whether `fused_adaptive_temporal_shift` can run on x."""
    return triton is not None and (x.is_cuda or INTERPRET)


def fused_unavailable_reason(device: torch.device) -> str | None:
    """Why the kernel cannot run on `device`, or None when it can."""
    if triton is None:
        return "Triton is not installed"
    if device.type != "cuda" and not INTERPRET:
        return f"the Triton kernel needs a CUDA device, not {device.type}"
    return None


def fused_adaptive_temporal_shift(x: Tensor, shift: Tensor) -> Tensor:
    """Same contract as model.shift.adaptive_temporal_shift (x [B, T, D], shift [B, T] ints), no gradient."""
    if not fused_shift_available(x):
        raise RuntimeError("the fused shift needs Triton and a CUDA tensor")
    if x.dim() != 3 or shift.shape != x.shape[:2]:
        raise ValueError(
            f"expected x [B, T, D] and shift [B, T], got {tuple(x.shape)} and {tuple(shift.shape)}"
        )
    x = x.contiguous()
    shift = shift.to(device=x.device, dtype=torch.int32).contiguous()
    y = torch.empty_like(x)
    batch, snippets, channels = x.shape
    if y.numel():
        grid = (batch * snippets, triton.cdiv(channels, BLOCK_CHANNELS))
        _shift_kernel[grid](x, shift, y, snippets, channels, BLOCK=BLOCK_CHANNELS)
    return y


def adaptive_temporal_shift_auto(x: Tensor, shift_sizes: Tensor) -> Tensor:
    """The fused kernel where it applies (CUDA, Triton, no autograd), else the tensor-op reference."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or shift_sizes.requires_grad)
    if not needs_grad and fused_shift_available(x):
        return fused_adaptive_temporal_shift(x, shift_sizes)
    return adaptive_temporal_shift(x, shift_sizes)
