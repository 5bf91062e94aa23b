"""ONNX export of the CLIP image encoder, for ONNX Runtime or TensorRT end to end on GPU hosts.

The exported graph is the image tower exactly as `model.backbones.clip.ClipBackbone` runs it: preprocessed
images [N, 3, H, W] float32 (resized, centre-cropped, (x / 255 - mean) / std) -> unnormalised image
embeddings [N, E]. Preprocessing stays outside the graph (it depends on the frame size); its mean, std and
crop size are in the metadata. Exported in fp32 with a dynamic batch axis; converting to fp16 is the runtime's
job (TensorRT builds, ORT float16 conversion).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import onnx
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from exporters.metadata import DEFAULT_OPSET, METADATA_KEY
from exporters.onnx import EXPORTER, MIN_OPSET, default_opset, export_loop_free, save_with_metadata
from model.backbones.identity import BackboneIdentity

log = logging.getLogger(__name__)

CLIP_FORMAT = "refinevad-clip-image-export/1"
CLIP_INPUT_NAME = "images"
CLIP_OUTPUT_NAME = "embeddings"
# A single-file ONNX model is one protobuf, capped at 2 GB. The image towers in use fit (ViT-L/14: 1.2 GB fp32),
# so exports stay one self-contained file.
PROTOBUF_LIMIT = 2**31 - 2**26


class ClipExportMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["refinevad-clip-image-export/1"] = CLIP_FORMAT
    backbone: BackboneIdentity
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_dim: int
    opset: int
    input_name: str = CLIP_INPUT_NAME
    output_name: str = CLIP_OUTPUT_NAME
    exporter: str = EXPORTER
    torch_version: str = torch.__version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def _image_size(visual: nn.Module) -> tuple[int, int]:
    size = visual.image_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def export_clip_image_encoder(
    visual: nn.Module,
    out: str | os.PathLike[str],
    backbone: BackboneIdentity,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    opset: int = DEFAULT_OPSET,
) -> ClipExportMetadata:
    """Export an open_clip image tower (`model.visual`) with a dynamic batch axis."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is not supported: the exporter emits opset {MIN_OPSET} or newer")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    visual = visual.float().cpu().eval()
    size = sum(p.numel() for p in visual.parameters()) * 4
    if size >= PROTOBUF_LIMIT:
        raise ValueError(
            f"image tower of {backbone.architecture} is {size / 1e9:.1f} GB, over ONNX's 2 GB file limit"
        )
    height, width = _image_size(visual)
    example = torch.randn(2, 3, height, width)
    model = export_loop_free(
        visual,
        example,
        CLIP_INPUT_NAME,
        [CLIP_OUTPUT_NAME],
        ({0: torch.export.Dim("batch", min=1)},),
        opset,
        "image encoder",
    )
    metadata = ClipExportMetadata(
        backbone=backbone,
        image_size=(height, width),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        embedding_dim=int(visual.output_dim),
        opset=default_opset(model),
    )
    save_with_metadata(model, out, metadata.model_dump_json(indent=2))
    out.with_name(out.name + ".json").write_text(metadata.model_dump_json(indent=2) + "\n", encoding="utf-8")
    log.info("exported CLIP image encoder %s to %s (opset %d)", backbone.key(), out, metadata.opset)
    return metadata


def export_clip_backbone(
    backbone: object, out: str | os.PathLike[str], opset: int = DEFAULT_OPSET
) -> ClipExportMetadata:
    """Export the image tower of a `model.backbones.clip.ClipBackbone` with its identity and normalisation."""
    from model.backbones.clip import ClipBackbone

    if not isinstance(backbone, ClipBackbone):
        raise TypeError(f"expected a ClipBackbone, got {type(backbone).__name__}")
    if backbone.text_branch:
        log.warning("only the image tower is exported; the text branch's features are not part of the graph")
    # The backbone folds x / 255 and (x - mean) / std into x * scale + shift; undo that to record mean/std.
    std = (1.0 / (255.0 * backbone._scale)).flatten().tolist()
    mean = (-backbone._shift * (1.0 / (255.0 * backbone._scale))).flatten().tolist()
    return export_clip_image_encoder(
        backbone.visual, out, backbone.identity, tuple(mean), tuple(std), opset=opset
    )


def read_clip_metadata(path: str | os.PathLike[str]) -> ClipExportMetadata:
    model = onnx.load_model(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} is an ONNX file without RefineVAD export metadata")
    return ClipExportMetadata.model_validate_json(props[METADATA_KEY])
