"""Broken accelerated paths for the start-up check tests, as an acceleration plugin.

Imported by name through the real hook (`EngineConfig.acceleration.plugins`, the service's
`REFINEVAD_ACCEL_PLUGINS`), it registers shift kernels and head backends that run on the CPU:

- shift `test-swapped`: takes x_{t+1} where x_{t-1} belongs and back (a plausible indexing bug);
- shift `test-raising`: fails like a kernel that does not compile;
- shift `test-gather`: a correct shift written differently (one gather), so a passing kernel is selected;
- head `test-offset`: the real eager head with every score 0.05 too high (a miscompiled graph);
- head `test-raising`: loads, then fails on every call.
- backbone runtime `test-noisy`: the real backbone with 10% noise on its features (a wrong fused graph).

Each counts its calls in `CALLS`, so a test can tell which path really served.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from exporters.backends import HeadBackend, load_head_backend, register_head_backend
from model.backbones.base import Backbone
from model.backbones.runtimes import BackboneRuntime, register_backbone_runtime
from model.shift import neighbours
from model.shift_kernels import ShiftKernel, register_shift_kernel

CALLS: Counter[str] = Counter()
SCORE_OFFSET = 0.05
NOISE = 0.1


def _anywhere(device: torch.device) -> str | None:
    return None


def swapped_shift(x: Tensor, shift: Tensor) -> Tensor:
    CALLS["shift:test-swapped"] += 1
    prev, nxt = neighbours(x)
    channel = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
    s = shift.to(channel.dtype).unsqueeze(-1)
    return torch.where(channel < s, nxt, torch.where(channel < 2 * s, prev, x))


def raising_shift(x: Tensor, shift: Tensor) -> Tensor:
    CALLS["shift:test-raising"] += 1
    raise RuntimeError("test-raising: kernel compilation failed")


def gather_shift(x: Tensor, shift: Tensor) -> Tensor:
    """The same shift as one gather over [x_{t-1}, x_{t+1}, x_t] stacked on a new axis."""
    CALLS["shift:test-gather"] += 1
    prev, nxt = neighbours(x)
    channel = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
    s = shift.to(channel.dtype).unsqueeze(-1)
    source = (channel >= s).long() + (channel >= 2 * s).long()  # 0: prev, 1: next, 2: current
    return torch.stack([prev, nxt, x]).gather(0, source.expand_as(x).unsqueeze(0))[0]


class OffsetHead(HeadBackend):
    kind = "test-offset"  # type: ignore[assignment]

    def __init__(self, inner: HeadBackend) -> None:
        super().__init__(inner.metadata, inner.device)
        self.inner = inner

    def run(self, x: Tensor) -> dict[str, Tensor]:
        CALLS["head:test-offset"] += 1
        out = self.inner.run(x)
        return {**out, "scores": out["scores"] + SCORE_OFFSET}


class RaisingHead(OffsetHead):
    kind = "test-raising"  # type: ignore[assignment]

    def run(self, x: Tensor) -> dict[str, Tensor]:
        CALLS["head:test-raising"] += 1
        raise RuntimeError("test-raising: the engine hit an illegal memory access")


def _offset(path: Path, device: torch.device, **_: object) -> HeadBackend:
    return OffsetHead(load_head_backend("torch", path, device))


def _raising(path: Path, device: torch.device, **_: object) -> HeadBackend:
    return RaisingHead(load_head_backend("torch", path, device))


register_shift_kernel(ShiftKernel("test-swapped", swapped_shift, _anywhere))
register_shift_kernel(ShiftKernel("test-raising", raising_shift, _anywhere))
register_shift_kernel(ShiftKernel("test-gather", gather_shift, _anywhere))
register_head_backend("test-offset", _offset)
register_head_backend("test-raising", _raising)


class NoisyBackbone(Backbone):
    """Another backbone's features with `NOISE` relative Gaussian noise on every call."""

    def __init__(self, inner: Backbone) -> None:
        self.inner, self.identity, self.device = inner, inner.identity, inner.device
        self.closed = False

    @property
    def path(self) -> str:
        return "test-noisy"

    def encode_snippets(self, frames, captions=None) -> Tensor:  # type: ignore[no-untyped-def]
        CALLS["backbone:test-noisy"] += 1
        features = self.inner.encode_snippets(frames, captions)
        return (
            features
            + NOISE
            * features.norm(dim=1, keepdim=True)
            * torch.randn_like(features)
            / features.shape[1] ** 0.5
        )

    def close(self) -> None:
        self.closed = True


register_backbone_runtime(BackboneRuntime("test-noisy", lambda backbone: None, NoisyBackbone))
