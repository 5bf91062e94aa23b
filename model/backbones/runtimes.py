"""Registry of accelerated runtimes for a backbone's network, e.g. ONNX Runtime for the EfficientNet-Lite0
appearance network on CPUs (registered by `exporters.appearance_onnx`).

A runtime turns a backbone on its reference path (eager PyTorch, fp32) into one that computes the same snippet
features another way. Nothing it makes serves unchecked: `model.acceleration.check_backbone` compares the
accelerated backbone's features with the reference's on the serving device at start-up and keeps the reference
when they differ. A plugin adds its own runtime with `register_backbone_runtime` (see the `accel_plugins`
setting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model.backbones.base import Backbone
from model.named_registry import lookup


@dataclass(frozen=True)
class BackboneRuntime:
    """`unavailable(backbone)` says why the runtime cannot run this backbone (None when it can);
    `accelerate(backbone)` returns a new backbone with the same identity computed by the runtime (it may share
    the reference's weights, never its thread pools or other closable state)."""

    name: str
    unavailable: Callable[[Backbone], str | None]
    accelerate: Callable[[Backbone], Backbone]


BACKBONE_RUNTIMES: dict[str, BackboneRuntime] = {}


def register_backbone_runtime(runtime: BackboneRuntime) -> None:
    """Make `runtime` selectable by name (a later registration of the same name replaces it)."""
    BACKBONE_RUNTIMES[runtime.name] = runtime


def backbone_runtime(name: str) -> BackboneRuntime:
    """The registered runtime `name`; KeyError naming the registered ones otherwise."""
    hint = " (the ONNX Runtime one is registered by importing exporters.appearance_onnx)"
    return lookup(BACKBONE_RUNTIMES, name, "backbone runtime", hint)
