"""Metadata of an exported RefineVAD head: what it was exported from and what inputs it accepts.

The same JSON is embedded in the exported file (ONNX `metadata_props`, TorchScript `_extra_files`) so the file
is self-describing, and written beside it as `<file>.json` for tools that do not parse either format.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from model.backbones.identity import BackboneIdentity
from model.checkpoint import LoadedCheckpoint
from model.config import RefineVADConfig

FORMAT = "refinevad-export/1"
# Key of the JSON in ONNX metadata_props and name of the TorchScript extra file.
METADATA_KEY = "refinevad"
TORCHSCRIPT_EXTRA_FILE = "refinevad.json"

INPUT_NAME = "features"
# Outputs of every exported head, in this order (see exporters/head.py).
OUTPUT_NAMES: tuple[str, ...] = ("scores", "category_probs", "category_weights", "logits")

# Longest window (snippets per video) an export accepts. Attention memory grows with T^2; 4096 snippets of 16
# frames is about 36 minutes of 30 fps video in one pass, far past the 32-snippet training length.
DEFAULT_MAX_SNIPPETS = 4096
# Opset 18 keeps the graph loadable by older ONNX Runtime and TensorRT releases; LayerNormalization needs 17.
DEFAULT_OPSET = 18

ExportKind = Literal["torchscript", "onnx"]
# "torch" describes the eager head a backend runs straight from a checkpoint.
HeadKind = Literal["torch", "torchscript", "onnx"]


class ExportMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["refinevad-export/1"] = FORMAT
    kind: HeadKind
    config: RefineVADConfig
    backbone: BackboneIdentity
    feature_dim: int
    category_names: list[str]
    max_snippets: int = Field(gt=0, description="largest T the export accepts (T from 1 to this)")
    opset: int | None = Field(None, description="ONNX default-domain opset; None for TorchScript")
    input_name: str = INPUT_NAME
    output_names: list[str] = Field(default_factory=lambda: list(OUTPUT_NAMES))
    exporter: str
    torch_version: str = torch.__version__
    source_sha256: str | None = Field(None, description="SHA-256 of the checkpoint it was exported from")
    checkpoint_metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: LoadedCheckpoint,
        kind: HeadKind,
        exporter: str,
        max_snippets: int,
        opset: int | None = None,
    ) -> ExportMetadata:
        return cls(
            kind=kind,
            config=checkpoint.config,
            backbone=checkpoint.backbone,
            feature_dim=checkpoint.config.feature_dim,
            category_names=list(checkpoint.config.category_names),
            max_snippets=max_snippets,
            opset=opset,
            exporter=exporter,
            source_sha256=checkpoint.sha256,
            checkpoint_metadata=_json_safe(checkpoint.metadata),
        )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    # Checkpoint metadata may hold tensors or paths; keep what JSON can carry, stringify the rest.
    return json.loads(json.dumps(value, default=str))


def sidecar_path(exported: str | os.PathLike[str]) -> Path:
    exported = Path(exported)
    return exported.with_name(exported.name + ".json")


def write_sidecar(exported: str | os.PathLike[str], metadata: ExportMetadata) -> Path:
    path = sidecar_path(exported)
    path.write_text(metadata.to_json() + "\n", encoding="utf-8")
    return path
