"""`two_stream`: appearance (EfficientNet-Lite0, ImageNet weights) and motion (the `motion` descriptor) features
of the same snippet, concatenated, as RGB + optical-flow two-stream features are (Simonyan & Zisserman,
NeurIPS 2014; I3D, Carreira & Zisserman, CVPR 2017, whose RGB + flow features most weakly supervised VAD
work trains on).

The motion stream sees every frame of the snippet (its flow needs consecutive frames); the appearance stream
encodes only `frames` evenly spaced ones, which keeps the cost of the pretrained network low. A snippet's
feature is `[appearance (1280 or 5120) | motion (336)]`, so `dim` is their sum; each stream's block is
reported by `blocks` for tools that look at one stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.backbones.base import Backbone, check_snippet_frames
from model.backbones.efficientnet import EfficientNetLite0Backbone
from model.backbones.identity import BackboneIdentity
from model.backbones.motion import MotionBackbone

SEPARATOR = "+"


class TwoStreamBackbone(Backbone):
    """Snippets `[S, F, H, W, 3]` uint8 RGB -> `[S, appearance.dim + motion.dim]` float32 on `device`."""

    def __init__(self, appearance: EfficientNetLite0Backbone, motion: MotionBackbone) -> None:
        if appearance.device != motion.device:
            raise ValueError(f"streams on different devices: {appearance.device} and {motion.device}")
        self.appearance = appearance
        self.motion = motion
        self.device = appearance.device
        a, m = appearance.identity, motion.identity
        self.identity = BackboneIdentity(
            name="two_stream",
            architecture=f"{a.name}:{a.architecture}{SEPARATOR}{m.name}:{m.architecture}",
            weights=f"{a.weights}{SEPARATOR}{m.weights}",
            dim=a.dim + m.dim,
        )
        self.precision = appearance.precision

    def reference_variant(self) -> TwoStreamBackbone | None:
        """The appearance stream's fp32 reference with a motion stream of its own (the motion descriptor has no
        accelerated path), or None when the appearance stream is its own reference."""
        appearance = self.appearance.reference_variant()
        return None if appearance is None else self.with_appearance(appearance)

    @property
    def path(self) -> str:
        return self.appearance.path

    def with_appearance(self, appearance: EfficientNetLite0Backbone) -> TwoStreamBackbone:
        """The same two streams with `appearance` (e.g. an accelerated runtime's) and a motion stream of its own,
        so closing either backbone leaves the other working."""
        return TwoStreamBackbone(
            appearance, MotionBackbone(self.device, threads=self.motion.threads, version=self.motion.version)
        )

    @property
    def blocks(self) -> dict[str, slice]:
        """Where each stream sits in the feature vector."""
        a = self.appearance.dim
        return {"appearance": slice(0, a), "motion": slice(a, a + self.motion.dim)}

    def encode_snippets(
        self, frames: np.ndarray | torch.Tensor, captions: Sequence[str] | None = None
    ) -> torch.Tensor:
        check_snippet_frames(frames)
        appearance = self.appearance.encode_snippets(frames)
        motion = self.motion.encode_snippets(frames)
        return torch.cat([appearance, motion.to(appearance.device)], dim=1)

    def close(self) -> None:
        self.appearance.close()
        self.motion.close()


def appearance_architecture(identity: BackboneIdentity) -> str:
    """The appearance stream's architecture string inside a two-stream identity."""
    first = identity.architecture.split(SEPARATOR, 1)[0]
    return first.split(":", 1)[1] if ":" in first else first


def motion_version(identity: BackboneIdentity) -> str:
    """The motion stream's descriptor version inside a two-stream identity."""
    return identity.weights.rsplit(SEPARATOR, 1)[-1]
