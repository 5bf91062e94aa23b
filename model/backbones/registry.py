"""Backbone configuration and the one place that builds a backbone from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from model.backbones.base import Backbone

# Read when the config leaves clip_checkpoint unset, so an offline container can point at baked-in weights.
CHECKPOINT_ENV = "REFINEVAD_CLIP_CHECKPOINT"


def _checkpoint_from_env() -> Path | None:
    value = os.environ.get(CHECKPOINT_ENV, "").strip()
    return Path(value) if value else None


class BackboneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["motion", "clip"] = Field(
        default="motion",
        description="motion: embedded weight-free OpenCV descriptor; clip: open_clip image encoder",
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
    text_captions: Path | None = Field(
        default=None,
        description="captions JSON {video: [caption per snippet]}; enables the CLIP text branch (D doubles)",
    )
    connect_timeout_s: float = Field(
        default=3.0, gt=0, description="how long to wait for the weights host before failing offline"
    )


def load_backbone(config: BackboneConfig, device: str | torch.device = "cpu") -> Backbone:
    """Build the configured backbone on `device`. CLIP failures (no weights offline) raise within seconds."""
    if config.name == "motion":
        from model.backbones.motion import MotionBackbone

        if config.text_captions is not None:
            raise ValueError(
                "text_captions needs the clip backbone (the motion backbone has no text encoder)"
            )
        return MotionBackbone(device, threads=config.motion_threads)
    from model.backbones.clip import ClipBackbone

    return ClipBackbone.from_config(config, device)
