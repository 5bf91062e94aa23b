"""`clip`: the open_clip image encoder (optionally plus its text encoder on per-snippet captions).

Frames are preprocessed on the device as tensor ops, as open_clip's own transform does (resize the shorter
side with antialiased bicubic, centre crop, normalise with the weights' mean/std), then encoded in batches of
`batch_size` frames; a snippet's feature is the mean of its frames' (unnormalised) image embeddings, as in
the public CLIP feature releases. fp16 on CUDA by default.

Weights: a local checkpoint file (`clip_checkpoint`, or $REFINEVAD_CLIP_CHECKPOINT), else the open_clip
pretrained tag from the local cache, else a download. Before downloading, the weights host is probed with a
short TCP connect, so an offline machine fails within seconds with a message saying what to set.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from model.backbones.base import Backbone, check_snippet_frames, encode_frame_chunks
from model.backbones.identity import BackboneIdentity
from model.backbones.registry import CHECKPOINT_ENV, BackboneConfig
from model.checkpoint import file_sha256

log = logging.getLogger(__name__)

_CAPTIONS = TypeAdapter(dict[str, list[str]])
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class WeightsUnavailableError(RuntimeError):
    """The configured CLIP weights are neither on disk nor downloadable."""


def _precision(config: BackboneConfig, device: torch.device) -> str:
    if config.precision != "auto":
        return config.precision
    return "fp16" if device.type == "cuda" else "fp32"


def _cached_weights(arch: str, tag: str, cache_dir: Path | None) -> str | None:
    """The local file open_clip would download for (arch, tag), if it is already in the cache."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith(".bin"):
            names.insert(0, filename[: -len(".bin")] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(model_id, name, cache_dir=str(cache_dir) if cache_dir else None)
            if isinstance(found, str):
                return found
    if cfg.get("url"):
        root = cache_dir or Path.home() / ".cache" / "clip"
        candidate = Path(root) / os.path.basename(urlsplit(cfg["url"]).path)
        if candidate.is_file():
            return str(candidate)
    return None


def _weights_host(arch: str, tag: str) -> tuple[str, int]:
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if cfg.get("hf_hub") else cfg.get("url", "")
    parts = urlsplit(url)
    return parts.hostname or "huggingface.co", parts.port or (80 if parts.scheme == "http" else 443)


def _offline_help(config: BackboneConfig) -> str:
    return (
        f"set clip_checkpoint (refinevad --clip-checkpoint PATH, or ${CHECKPOINT_ENV}) to a local open_clip "
        f"checkpoint file for {config.clip_arch}, pre-fill the cache_dir, or use the weight-free "
        f"'motion' backbone"
    )


def _check_download_possible(config: BackboneConfig) -> None:
    """Fail fast (seconds) instead of letting the hub client retry for minutes on an offline machine."""
    arch, tag = config.clip_arch, config.clip_pretrained
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise WeightsUnavailableError(
            f"CLIP weights {arch}/{tag} are not in the local cache and HF_HUB_OFFLINE is set: "
            + _offline_help(config)
        )
    host, port = _weights_host(arch, tag)
    try:
        with socket.create_connection((host, port), timeout=config.connect_timeout_s):
            pass
    except OSError as exc:
        raise WeightsUnavailableError(
            f"cannot download CLIP weights {arch}/{tag}: {host}:{port} is unreachable ({exc}); "
            + _offline_help(config)
        ) from None


def _build_model(config: BackboneConfig, device: torch.device) -> tuple[torch.nn.Module, str, dict]:
    """(model, identity weights string, pretrained cfg of the tag) for the config."""
    arch, tag = config.clip_arch, config.clip_pretrained
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture clip_arch={arch!r}")
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if tag and not tag_cfg and config.clip_checkpoint is None:
        raise ValueError(
            f"unknown pretrained tag clip_pretrained={tag!r} for {arch}; "
            f"known: {', '.join(open_clip.list_pretrained_tags_by_model(arch))}"
        )
    precision = _precision(config, device)
    # The tag also says how the weights were trained: QuickGELU for OpenAI's, which a file does not record.
    common = {
        "precision": precision,
        "device": device,
        "force_quick_gelu": bool(tag_cfg.get("quick_gelu", False)),
        "pretrained_text": False,
        "cache_dir": str(config.cache_dir) if config.cache_dir else None,
    }
    if config.clip_checkpoint is not None:
        path = Path(config.clip_checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"clip_checkpoint {path} does not exist (set clip_checkpoint / ${CHECKPOINT_ENV})"
            )
        weights = f"sha256:{file_sha256(path)}"
        model = open_clip.create_model(arch, pretrained=str(path), **common)
        return model, weights, tag_cfg
    if tag is None:
        log.warning("CLIP %s with random weights: its features carry no meaning (benchmarks only)", arch)
        return open_clip.create_model(arch, pretrained=None, **common), "random", {}
    cached = _cached_weights(arch, tag, config.cache_dir)
    if cached is None:
        _check_download_possible(config)
        log.info("downloading CLIP weights %s/%s", arch, tag)
        try:
            return open_clip.create_model(arch, pretrained=tag, **common), tag, tag_cfg
        except RuntimeError as exc:
            raise WeightsUnavailableError(f"{exc}; {_offline_help(config)}") from exc
    return open_clip.create_model(arch, pretrained=cached, **common), tag, tag_cfg


class ClipBackbone(Backbone):
    def __init__(
        self,
        model: torch.nn.Module,
        identity: BackboneIdentity,
        device: torch.device,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int = 64,
        tokenizer=None,
        captions: dict[str, list[str]] | None = None,
    ) -> None:
        self.device = device
        self.identity = identity
        self.batch_size = batch_size
        model.eval()
        self.visual = model.visual
        # Only the image tower is kept unless the text branch needs the rest.
        self._model = model if tokenizer is not None else None
        self._tokenizer = tokenizer
        self._captions = captions or {}
        self._mean, self._std = tuple(mean), tuple(std)
        self.dtype = _compute_dtype(self.visual)
        self.precision = {dtype: name for name, dtype in _DTYPES.items()}.get(self.dtype, str(self.dtype))
        size = self.visual.image_size
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        # x / 255 then (x - mean) / std, folded into one multiply-add.
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    @classmethod
    def from_config(cls, config: BackboneConfig, device: str | torch.device) -> ClipBackbone:
        device = torch.device(device)
        model, weights, tag_cfg = _build_model(config, device)
        preprocess_cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = tag_cfg.get("mean") or preprocess_cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN
        std = tag_cfg.get("std") or preprocess_cfg.get("std") or open_clip.OPENAI_DATASET_STD
        image_dim = int(model.visual.output_dim)
        tokenizer = captions = None
        if config.text_captions is not None:
            captions = load_captions(config.text_captions)
            tokenizer = open_clip.get_tokenizer(config.clip_arch)
        identity = BackboneIdentity(
            name="clip",
            architecture=config.clip_arch,
            weights=weights,
            dim=image_dim * (2 if captions is not None else 1),
            text_branch=captions is not None,
        )
        return cls(
            model,
            identity,
            device,
            mean=mean,
            std=std,
            batch_size=config.batch_size,
            tokenizer=tokenizer,
            captions=captions,
        )

    def reference_variant(self) -> ClipBackbone | None:
        """An fp32 copy of this encoder (same weights) when this one computes in fp16/bf16, else None."""
        if self.dtype == torch.float32:
            return None
        # Without a text branch only the image tower is kept (and copied).
        source = self._model if self._model is not None else _VisualOnly(self.visual)
        return ClipBackbone(
            copy.deepcopy(source).float(),
            self.identity,
            self.device,
            mean=self._mean,
            std=self._std,
            batch_size=self.batch_size,
            tokenizer=self._tokenizer,
            captions=self._captions,
        )

    # -- encoding ----------------------------------------------------------------------------------------
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3] uint8 on the device -> [N, 3, h, w] normalised, in the model's dtype."""
        x = frames.permute(0, 3, 1, 2).float()
        height, width = x.shape[-2:]
        out_h, out_w = self.image_size
        scale = max(out_h / height, out_w / width)  # shorter side to the crop size, as open_clip's Resize
        new_h, new_w = max(out_h, round(height * scale)), max(out_w, round(width * scale))
        if (new_h, new_w) != (height, width):
            x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 255.0)
        top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
        x = x[..., top : top + out_h, left : left + out_w]
        return (x * self._scale + self._shift).to(self.dtype)

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3] uint8 -> [N, image_dim] float32 image embeddings, `batch_size` frames per pass."""
        return encode_frame_chunks(
            frames,
            self.device,
            self.batch_size,
            lambda chunk: self.visual(self.preprocess(chunk)),
            int(self.visual.output_dim),
        )

    @torch.inference_mode()
    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        if self._model is None or self._tokenizer is None:
            raise RuntimeError("this CLIP backbone was built without a text branch (set text_captions)")
        tokens = self._tokenizer(list(captions)).to(self.device)
        return self._model.encode_text(tokens).float()

    def encode_snippets(
        self, frames: np.ndarray | torch.Tensor, captions: Sequence[str] | None = None
    ) -> torch.Tensor:
        s, f, h, w = check_snippet_frames(frames)
        visual = self.encode_frames(frames.reshape(s * f, h, w, 3)).view(s, f, -1).mean(dim=1)
        if not self.text_branch:
            return visual
        if captions is None or len(captions) != s:
            raise ValueError(
                f"this backbone has a text branch: pass one caption per snippet ({s}), got "
                f"{'none' if captions is None else len(captions)}"
            )
        return torch.cat([visual, self.encode_text(captions)], dim=1)

    def captions_for(self, video: str) -> list[str]:
        if not self.text_branch:
            return super().captions_for(video)
        captions = self._captions.get(video)
        if not captions:
            raise KeyError(f"the captions file has no captions for video {video!r}")
        return captions

    def close(self) -> None:
        self.visual = None  # type: ignore[assignment]
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _compute_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype most of the weights are in (open_clip's fp16/bf16 leave embeddings and norms in fp32)."""
    counts: dict[torch.dtype, int] = {}
    for parameter in module.parameters():
        counts[parameter.dtype] = counts.get(parameter.dtype, 0) + parameter.numel()
    return max(counts, key=counts.__getitem__)


class _VisualOnly(torch.nn.Module):
    """Holds just an image tower, in the shape ClipBackbone's constructor reads (`model.visual`)."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual


def load_captions(path: Path) -> dict[str, list[str]]:
    """Captions JSON: {video name: [caption of snippet 0, caption of snippet 1, ...]}."""
    try:
        return _CAPTIONS.validate_python(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"text_captions {path}: expected JSON {{video: [caption per snippet]}} ({exc})"
        ) from exc
