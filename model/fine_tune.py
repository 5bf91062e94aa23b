"""Fine-tuning a trained checkpoint on new weakly labelled videos (a site's operator feedback, for instance).

The run starts from the checkpoint's weights, keeps its model config (categories, input standardisation) and its
training objective (loss weights, batch size, splicing, validation criterion, scene margin as stored in its
`train_config`), and changes only the schedule: `FINE_TUNE_DEFAULTS` (a few epochs at a lower rate, no warm-up,
the best epoch on the held-out videos kept, no early stop), then the caller's overrides.

A seed ensemble (`model.ensemble`) is fine-tuned member by member, each from its own weights with its own seed
(the base's member seeds; the config's seed only where the base records none), and combined again
(`model.checkpoint.combine_checkpoints`): `OUT/best.pt` is the ensemble, `OUT/members/<i>/` each member's run
(its `best.pt` and history; its `last.pt` is removed). A single head's run writes `OUT/best.pt` itself. Either
way the scene-familiarity check stored in the result is fitted on the new videos (the footage the head is now
meant for; `model.scene_familiarity`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.backbones.identity import BackboneIdentity
from model.checkpoint import combine_checkpoints, file_sha256, load_checkpoint_payload
from model.config import RefineVADConfig
from model.data.datasets import FeatureSet
from model.training import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

FINE_TUNE_DEFAULTS: dict[str, Any] = {
    "epochs": 8,
    "lr": 3e-4,
    "warmup_epochs": 0.0,
    "patience": None,
    "swa_epochs": None,
}
# What a fine-tune keeps of the base run's training config: the objective, not its schedule or its seed.
KEPT_FROM_BASE = (
    "batch_size",
    "weight_decay",
    "min_lr_ratio",
    "grad_clip",
    "sample_crops",
    "splice_prob",
    "val_criterion",
    "scene_margin",
    "loss",
)


@dataclass
class FineTuneResult:
    checkpoint: Path  # OUT/best.pt
    members: list[TrainResult]  # one per fine-tuned head (one for a single head)


def fine_tune_config(
    base_train_config: Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> TrainConfig:
    """The base run's objective (`KEPT_FROM_BASE` of its stored train config, where it has one and it is
    valid), `FINE_TUNE_DEFAULTS`, then `overrides` (None values ignored). Raises pydantic's ValidationError for
    bad overrides."""
    kept: dict[str, Any] = {}
    if base_train_config:
        try:
            base = TrainConfig.model_validate(dict(base_train_config) | {"swa_epochs": None})
            kept = {key: value for key, value in base.model_dump().items() if key in KEPT_FROM_BASE}
        except ValueError as exc:
            log.warning("the base checkpoint's training config is not usable (%s): TrainConfig defaults", exc)
    given = {key: value for key, value in overrides.items() if value is not None}
    return TrainConfig.model_validate(kept | FINE_TUNE_DEFAULTS | given)


def fine_tune(
    features: FeatureSet,
    base: str | Path,
    out: str | Path,
    config: TrainConfig,
    *,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> FineTuneResult:
    """Fine-tune the checkpoint `base` on `features` into `out` (see the module). `metadata` is stored in the
    result (each member's too), with `fine_tuned_from` (the base file's name and SHA-256).

    Raises ValueError when the features come from another backbone or carry other categories than the base
    model, or when `base` is not a checkpoint; as `model.training.train` otherwise.
    """
    base, out = Path(base), Path(out)
    payload = load_checkpoint_payload(base)
    model_config = RefineVADConfig.model_validate(payload["config"])
    problem = BackboneIdentity.model_validate(payload["backbone"]).mismatch(features.backbone)
    if problem:
        raise ValueError(f"the features do not fit {base}: {problem}")
    if list(features.category_names) != list(model_config.category_names):
        raise ValueError(
            f"the features' categories {list(features.category_names)} are not the base model's "
            f"{model_config.category_names}"
        )
    extra = dict(metadata or {}) | {"fine_tuned_from": {"checkpoint": base.name, "sha256": file_sha256(base)}}
    state = payload["state_dict"]
    members = int(payload.get("members") or 0)
    if not members:
        result = train(
            features, out, config, model_config, progress=progress, metadata=extra, init_state=state
        )
        return FineTuneResult(result.best_checkpoint, [result])
    seeds = (payload.get("metadata", {}).get("ensemble") or {}).get("seeds") or []
    results = []
    for i in range(members):
        prefix = f"members.{i}."
        member_state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        seed = seeds[i] if i < len(seeds) and seeds[i] is not None else config.seed + i
        log.info("fine-tuning ensemble member %d of %d (seed %d)", i + 1, members, seed)
        results.append(
            train(
                features,
                out / "members" / str(i),
                config.model_copy(update={"seed": int(seed)}),
                model_config,
                progress=progress,
                metadata=extra,
                init_state=member_state,
            )
        )
    best = combine_checkpoints([r.best_checkpoint for r in results], out / "best.pt", extra)
    for r in results:
        # Optimizer state for a resume nothing offers (the ensemble is combined from best.pt): 3x a head's size.
        r.last_checkpoint.unlink(missing_ok=True)
    return FineTuneResult(best, results)
