"""Checkpoints of the RefineVAD head: weights plus everything needed to serve them safely.

A checkpoint carries the full model config (category names and feature dim included), the identity of the
backbone whose features it was trained on, and metadata (trained or not, seed, metrics, training config). It is
a plain dict of tensors, strings and numbers, loaded with `weights_only=True` (no pickled code runs).

A seed ensemble (`model.ensemble`) is one checkpoint too, of format `refinevad-checkpoint/2`: its payload's
`members` says how many heads its state dict holds (`members.0.*`, `members.1.*`, ...); `combine_checkpoints`
builds one from trained members.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.backbones.identity import BackboneIdentity
from model.config import RefineVADConfig
from model.ensemble import HeadModel, RefineVADEnsemble
from model.refinevad import RefineVAD

FORMAT = "refinevad-checkpoint/1"
# A seed ensemble gets its own tag: code that knows only single heads refuses it by name instead of failing on
# hundreds of unexpected `members.N.*` weights.
ENSEMBLE_FORMAT = "refinevad-checkpoint/2"
FORMATS = (FORMAT, ENSEMBLE_FORMAT)


@dataclass
class LoadedCheckpoint:
    model: HeadModel
    config: RefineVADConfig
    backbone: BackboneIdentity
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None

    @property
    def trained(self) -> bool:
        return bool(self.metadata.get("trained", False))


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: HeadModel,
    backbone: BackboneIdentity,
    metadata: dict[str, Any] | None = None,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write atomically; `extra_state` (optimizer, scheduler, epoch) is for resuming training."""
    if backbone.dim != model.config.feature_dim:
        raise ValueError(
            f"backbone {backbone.key()} gives {backbone.dim}-dim features but the model expects "
            f"{model.config.feature_dim}"
        )
    payload = {
        "format": FORMAT,
        "config": model.config.model_dump(mode="json"),
        "backbone": backbone.model_dump(mode="json"),
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if isinstance(model, RefineVADEnsemble):
        payload["format"] = ENSEMBLE_FORMAT
        payload["members"] = len(model.members)
    if extra_state:
        payload["extra_state"] = extra_state
    return write_checkpoint_payload(payload, path)


def write_checkpoint_payload(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a checkpoint payload (as `load_checkpoint_payload` returns it) atomically: a reader never sees half a
    file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint_payload(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path} is not a readable RefineVAD checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS:
        raise ValueError(f"{path} is not a RefineVAD checkpoint (expected format {' or '.join(FORMATS)})")
    return payload


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Load weights into a fresh model (a `RefineVADEnsemble` for an ensemble checkpoint) in eval mode."""
    payload = load_checkpoint_payload(path, map_location)
    config = RefineVADConfig.model_validate(payload["config"])
    members = payload.get("members")
    model = RefineVADEnsemble(config, int(members)) if members else RefineVAD(config)
    model.load_state_dict(payload["state_dict"])
    model.to(map_location).eval()
    return LoadedCheckpoint(
        model=model,
        config=config,
        backbone=BackboneIdentity.model_validate(payload["backbone"]),
        metadata=dict(payload.get("metadata", {})),
        path=Path(path),
        sha256=file_sha256(path),
    )


def update_checkpoint_metadata(
    path: str | os.PathLike[str], updates: dict[str, Any], out: str | os.PathLike[str] | None = None
) -> Path:
    """Write `path` with `updates` merged into its metadata to `out` (default: in place, atomically); weights,
    config and backbone identity are copied unchanged. Raises as `load_checkpoint_payload` does."""
    payload = load_checkpoint_payload(path)
    payload["metadata"] = dict(payload.get("metadata", {})) | updates
    return write_checkpoint_payload(payload, out if out is not None else path)


def _comparable(key: str, value: Any) -> Any:
    # Configs compare as models, so one written before a defaulted field existed equals one written after.
    return RefineVADConfig.model_validate(value) if key == "config" else value


def combine_checkpoints(
    paths: list[str | os.PathLike[str]], out: str | os.PathLike[str], metadata: dict[str, Any] | None = None
) -> Path:
    """Write the seed ensemble of trained single-head checkpoints `paths` (>= 2) to `out`.

    Members must share the model config (seed aside, the training config is not compared) and the backbone
    identity. The ensemble's metadata is the first member's (its scene calibration included: every member was
    fitted on the same training features) less what belongs to one run (`seed`, `metrics`, `epoch`, the training
    config's `seed`), plus `ensemble` (the members' seeds, SHA-256 and metrics), then `metadata` merged in (a
    `description` of the ensemble, for instance). Raises `ValueError` for fewer than 2 paths, an ensemble or
    untrained member, or members that differ in config or backbone; as `load_checkpoint_payload` for unreadable
    files.
    """
    if len(paths) < 2:
        raise ValueError(f"an ensemble needs at least 2 checkpoints, got {len(paths)}")
    payloads = [load_checkpoint_payload(p) for p in paths]
    first = payloads[0]
    for path, payload in zip(paths, payloads, strict=True):
        if payload.get("members"):
            raise ValueError(f"{path} is already an ensemble; combine its single-head members instead")
        if not payload.get("metadata", {}).get("trained", False):
            raise ValueError(f"{path} is an untrained checkpoint; an ensemble is built from trained heads")
        for key in ("config", "backbone"):
            if _comparable(key, payload[key]) != _comparable(key, first[key]):
                raise ValueError(
                    f"{path} differs from {paths[0]} in its {key}; ensemble members must share it"
                )
    state_dict = {
        f"members.{i}.{key}": tensor
        for i, payload in enumerate(payloads)
        for key, tensor in payload["state_dict"].items()
    }
    merged = {k: v for k, v in first.get("metadata", {}).items() if k not in ("seed", "metrics", "epoch")}
    if isinstance(merged.get("train_config"), dict):
        merged["train_config"] = {k: v for k, v in merged["train_config"].items() if k != "seed"}
    merged["ensemble"] = {
        "members": len(paths),
        "averaging": "mean snippet probability (deep ensemble, Lakshminarayanan et al. 2017)",
        "seeds": [p["metadata"].get("seed") for p in payloads],
        "member_sha256": [file_sha256(p) for p in paths],
        "member_metrics": [p["metadata"].get("metrics", {}) for p in payloads],
    }
    payload = {
        "format": ENSEMBLE_FORMAT,
        "config": first["config"],
        "backbone": first["backbone"],
        "metadata": merged | dict(metadata or {}),
        "state_dict": state_dict,
        "members": len(paths),
    }
    return write_checkpoint_payload(payload, out)
