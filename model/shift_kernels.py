"""Registry of inference kernels for MoTAR's adaptive temporal shift, and the dispatch MoTAR uses.

The tensor-op shift (`model.shift.adaptive_temporal_shift`, name `reference`) is what every model runs unless a
start-up check (`model.acceleration`) found a registered kernel equal to it on the serving device and selected
it with `select_shift_kernel`. Built in: `triton` (the fused kernel of `model.shift_triton`). A plugin adds its
own with `register_shift_kernel` (see the `accel_plugins` setting).

A kernel only ever runs forward without autograd: when a gradient is needed the dispatch uses the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.named_registry import lookup
from model.shift import adaptive_temporal_shift
from model.shift_triton import fused_adaptive_temporal_shift, fused_unavailable_reason

REFERENCE = "reference"


@dataclass(frozen=True)
class ShiftKernel:
    """An implementation of `adaptive_temporal_shift`'s contract: x [B, T, D] float, shift [B, T] integer
    channel counts -> y [B, T, D] on x's device, no gradient needed.

    `unavailable(device)` says why the kernel cannot run on `device` (None when it can).
    """

    name: str
    forward: Callable[[Tensor, Tensor], Tensor]
    unavailable: Callable[[torch.device], str | None]


SHIFT_KERNELS: dict[str, ShiftKernel] = {}


def register_shift_kernel(kernel: ShiftKernel) -> None:
    """Make `kernel` selectable by name (a later registration of the same name replaces it)."""
    if kernel.name == REFERENCE:
        raise ValueError(f"{REFERENCE!r} names the tensor-op shift and cannot be registered")
    SHIFT_KERNELS[kernel.name] = kernel


def shift_kernel(name: str) -> ShiftKernel:
    """The registered kernel `name`; KeyError naming the known ones otherwise."""
    return lookup(SHIFT_KERNELS, name, "shift kernel")


def run_shift(name: str, x: Tensor, shift: Tensor) -> Tensor:
    """The shift by kernel `name` (`reference` = the tensor ops); the reference whenever autograd needs one."""
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    if name == REFERENCE or needs_grad:
        return adaptive_temporal_shift(x, shift)
    return shift_kernel(name).forward(x, shift)


def select_shift_kernel(model: nn.Module, name: str) -> None:
    """Make every MoTAR block inside `model` shift with kernel `name` (checked by the caller)."""
    if name != REFERENCE:
        shift_kernel(name)
    for module in model.modules():
        if hasattr(module, "shift_kernel"):
            module.shift_kernel = name


def selected_shift_kernel(model: nn.Module) -> str:
    """The kernel the MoTAR blocks of `model` shift with."""
    names = {module.shift_kernel for module in model.modules() if hasattr(module, "shift_kernel")}
    return names.pop() if len(names) == 1 else REFERENCE


register_shift_kernel(ShiftKernel("triton", fused_adaptive_temporal_shift, fused_unavailable_reason))
