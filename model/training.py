"""Training of the RefineVAD head on snippet features (weak supervision: video-level labels only).

AdamW with a linear warm-up then a cosine decay per step; balanced normal/anomalous batches; a validation split
held out from the training videos (never the test set) drives best-checkpoint selection and early stopping.

Validation criterion: video-level ROC-AUC of each held-out video's top-k mean snippet score (the MIL video score)
against its video label, computed on the full-length features; ties (within `min_delta`, e.g. both 1.0 on an easy
set) are broken by the validation loss (the training loss on the held-out videos, resampled to T bins). When frame
labels of the held-out videos are supplied (`validation_frame_labels`), frame-level ROC-AUC is used instead.
`val_criterion="splice_auc"` uses the snippet AUC of the held-out normal and anomalous videos spliced in time
(`model.evaluation.splice`), which also sees a head spread an anomaly over its temporal context.

Stochastic Weight Averaging (`swa_epochs`; Izmailov et al., UAI 2018, "Averaging Weights Leads to Wider Optima and
Better Generalization"): the weights after each of the last `swa_epochs` epochs of a fixed budget are averaged
(`torch.optim.swa_utils.AveragedModel`, equal weights), BatchNorm statistics are recomputed for the averaged
weights over one pass of the training batches (`update_bn`), and the result is written to `swa.pt`. The learning
rate schedule is unchanged (warm-up cosine).

Output folder: `best.pt` (the selected epoch, what `evaluate` and the service load), `last.pt` (latest epoch plus
optimizer, scheduler, RNG state, history and the running SWA average, what `--resume` continues from),
`history.json`, and `swa.pt` when `swa_epochs` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator
from sklearn.metrics import roc_auc_score
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm.auto import tqdm

from model.checkpoint import load_checkpoint_payload, save_checkpoint
from model.config import RefineVADConfig
from model.data.datasets import (
    BalancedBatches,
    FeatureSet,
    VideoRecord,
    resample_to_bins,
    split_train_validation,
)
from model.evaluation.splice import score_spliced
from model.losses import LossConfig, live_consistency_loss, topk_mean, total_loss
from model.refinevad import FeatureStandardizer, RefineVAD
from model.scene_familiarity import DEFAULT_MARGIN, fit_scene_familiarity
from model.scene_familiarity import METADATA_KEY as SCENE_KEY
from model.scoring import score_features

log = logging.getLogger(__name__)

BEST = "best.pt"
LAST = "last.pt"
SWA = "swa.pt"
HISTORY = "history.json"


class TrainConfig(BaseModel):
    """Everything that decides a training run (the model's own switches live in RefineVADConfig)."""

    seed: int = 42
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=2, description="normal + anomalous videos per batch (half each)")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up length, in epochs")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(5.0, gt=0)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    patience: int | None = Field(
        5, ge=1, description="epochs without improvement before stopping; None = never"
    )
    min_delta: float = Field(1e-4, ge=0)
    sample_crops: bool = True
    splice_prob: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability that an anomalous training video is spliced with a normal one whose part is "
        "then trained as normal (BalancedBatches; loss weight loss.lambda_known_normal)",
    )
    val_criterion: Literal["video_auc", "splice_auc"] = Field(
        "video_auc",
        description="best-epoch criterion on the held-out training videos: their video-level AUC, or the "
        "snippet AUC of the held-out normal and anomalous videos spliced in time (model.evaluation.splice); "
        "frame AUC instead of either when validation frame labels are given",
    )
    scene_margin: float | None = Field(
        DEFAULT_MARGIN,
        gt=0,
        description="scene-familiarity threshold as a multiple of the largest leave-one-clip-out distance of "
        "the training videos (model.scene_familiarity), stored in the checkpoints; None = no check stored",
    )
    cache_bytes: int = Field(1 << 30, ge=0, description="memory for resampled training features")
    device: str = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch's default")
    loss: LossConfig = Field(default_factory=LossConfig)
    swa_epochs: int | None = Field(
        None,
        ge=1,
        description="Stochastic Weight Averaging (Izmailov et al., UAI 2018, 'Averaging Weights Leads to Wider "
        "Optima and Better Generalization'): average the weights after each of the last swa_epochs epochs "
        "(torch.optim.swa_utils.AveragedModel), recompute BatchNorm statistics over one pass of the training "
        "batches (update_bn) and write swa.pt; needs a fixed budget (patience None); None = off",
    )

    @model_validator(mode="after")
    def _check_swa(self) -> TrainConfig:
        if self.swa_epochs is not None:
            if self.swa_epochs > self.epochs:
                raise ValueError(f"swa_epochs ({self.swa_epochs}) must not exceed epochs ({self.epochs})")
            if self.patience is not None:
                raise ValueError(
                    "swa_epochs averages the last epochs of a fixed budget: set patience to None (no early "
                    "stopping) to use it"
                )
        return self


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    # swa.pt when TrainConfig.swa_epochs is set and the budget was completed
    swa_checkpoint: Path | None = None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


@dataclass
class ValidationSet:
    features: FeatureSet
    records: list[VideoRecord]
    num_segments: int
    frame_labels: Mapping[str, np.ndarray] | None = None  # per-snippet 0/1 of held-out videos, if known
    criterion: Literal["video_auc", "splice_auc"] = "video_auc"

    def __post_init__(self) -> None:
        self._full = [self.features.load(r) for r in self.records]
        self._resampled = torch.from_numpy(
            np.stack([resample_to_bins(x, self.num_segments) for x in self._full])
        )
        self._labels = torch.tensor([float(r.label) for r in self.records])
        self._categories = torch.tensor(
            [self.features.category_index(r) for r in self.records], dtype=torch.long
        )

    @torch.no_grad()
    def evaluate(self, model: RefineVAD, loss_config: LossConfig, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        out = model(self._resampled.to(device))
        loss, _ = total_loss(model, out, self._labels.to(device), self._categories.to(device), loss_config)
        video_scores, snippet_scores, snippet_labels = [], [], []
        for record, x in zip(self.records, self._full, strict=True):
            scores = score_features(model, torch.from_numpy(x).to(device)).scores
            video_scores.append(float(topk_mean(scores[None], loss_config.topk_divisor)[0]))
            if self.frame_labels is not None:
                snippet_scores.append(scores.cpu().numpy())
                snippet_labels.append(np.asarray(self.frame_labels[record.name])[: scores.shape[0]])
        spliced = None
        if self.criterion == "splice_auc":
            spliced = score_spliced(
                lambda x: score_features(model, torch.from_numpy(x).to(device)).scores.cpu().numpy(),
                [x for r, x in zip(self.records, self._full, strict=True) if not r.label],
                [x for r, x in zip(self.records, self._full, strict=True) if r.label],
            )
        model.train(was_training)
        labels = self._labels.numpy()
        metrics = {"val_loss": float(loss), "val_video_auc": float(roc_auc_score(labels, video_scores))}
        if spliced is not None:
            metrics["val_splice_auc"] = spliced["splice_snippet_auc"]
            metrics["val_splice_normal_mean"] = spliced["splice_normal_mean"]
        if self.frame_labels is not None:
            flat_labels = np.concatenate(snippet_labels)
            if 0 < flat_labels.sum() < flat_labels.size:
                metrics["val_frame_auc"] = float(roc_auc_score(flat_labels, np.concatenate(snippet_scores)))
        metrics["val_auc"] = metrics.get("val_frame_auc", metrics[f"val_{self.criterion}"])
        return metrics


def live_window_consistency(
    model: RefineVAD, features: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The live-window consistency term (`LossConfig.lambda_live`) for one batch of features [B, T, D], T >= 3.

    A prefix length L is drawn uniformly from 2 .. T - 1 with `generator`. The first L - 1 snippets are scored
    twice, both in evaluation mode (no dropout, BatchNorm's running statistics) and without the training-time
    category prototype: from the prefix alone, and from the whole clip without gradient, as offline analysis
    scores them. This approximates the live window (`model.scoring.live_window_scores`) rather than copying it:
    the live service scores snippet t from a window ending one snippet after it, while in the prefix snippet t
    sees L - 1 - t snippets after it, and training clips are resampled to T bins, which are not live snippets.
    A head that scores each snippet alone (base MLP+MIL) gets exactly zero. Returns `live_consistency_loss` of
    the two (a scalar); the model's training mode is restored.
    """
    length = int(torch.randint(2, features.shape[1], (), generator=generator))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            teacher = model(features).logits[:, : length - 1]
        student = model(features[:, :length]).logits[:, : length - 1]
    finally:
        model.train(was_training)
    return live_consistency_loss(student, teacher)


def _improved(metrics: dict[str, float], best: dict[str, float] | None, min_delta: float) -> bool:
    if best is None:
        return True
    if metrics["val_auc"] > best["val_auc"] + min_delta:
        return True
    return (
        abs(metrics["val_auc"] - best["val_auc"]) <= min_delta
        and metrics["val_loss"] < best["val_loss"] - min_delta
    )


def _config_fingerprint(train: TrainConfig, model: RefineVADConfig) -> dict[str, Any]:
    # swa_epochs only when set: runs started before the field existed can still be resumed. scene_margin does not
    # change the weights (it only sets what the checkpoints store about the training footage).
    excluded = {"device", "cache_bytes", "threads", "scene_margin"} | (
        {"swa_epochs"} if train.swa_epochs is None else set()
    )
    # loss.lambda_live only when set, for the same reason.
    exclude: dict[str, Any] = dict.fromkeys(excluded, True)
    if train.loss.lambda_live == 0:
        exclude["loss"] = {"lambda_live"}
    # (RefineVADConfig leaves attention_window out of its dump when unset, for the same reason.)
    return {
        "train": train.model_dump(mode="json", exclude=exclude),
        "model": model.model_dump(mode="json"),
    }


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and values (fp32 on the CPU), in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(
            tensor.float().contiguous().numpy().tobytes()
            if tensor.is_floating_point()
            else tensor.contiguous().numpy().tobytes()
        )
    return digest.hexdigest()


def feature_moments(
    features: FeatureSet, records: Sequence[VideoRecord]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel sums of x and x^2 (float64 [D]) and the snippet count over `records`' first crops, one video
    in memory at a time."""
    total = torch.zeros(features.feature_dim, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for record in records:
        x = torch.from_numpy(features.load(record)).double()
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += len(x)
    return total, total_sq, count


def train(
    features: FeatureSet,
    out_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    model_config: RefineVADConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    validation_frame_labels: Mapping[str, np.ndarray] | None = None,
    metadata: Mapping[str, Any] | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train on `features` (split into train/validation by `config.val_fraction`) and write checkpoints.

    `model_config` defaults to RefineVADConfig with the feature set's dim and categories; its `feature_dim` and
    `category_names` must match the feature set. `stop_after_epochs` ends this call early (as an interruption
    would); `resume=True` then continues from `last.pt` with the same schedule.

    `init_state` fine-tunes: the run starts from these weights (a single RefineVAD head's state dict of
    `model_config`, e.g. a trained checkpoint's) and keeps their input standardisation instead of refitting it
    on `features` (the weights were learned on that scale, and a fine-tuning set may be a few clips). Raises
    `RuntimeError` (from `load_state_dict`) when the weights do not fit `model_config`.
    """
    config = config or TrainConfig()
    model_config = model_config or RefineVADConfig(
        feature_dim=features.feature_dim, category_names=list(features.category_names)
    )
    if model_config.feature_dim != features.feature_dim:
        raise ValueError(
            f"model expects {model_config.feature_dim}-dim features, the set has {features.feature_dim}"
        )
    if list(model_config.category_names) != list(features.category_names):
        raise ValueError(
            f"model categories {model_config.category_names} differ from the feature set's {features.category_names}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    fingerprint = _config_fingerprint(config, model_config)
    if init_state is not None:
        # A resumed fine-tune must continue from the same starting weights.
        fingerprint["init_sha256"] = state_digest(init_state)

    train_records, val_records = split_train_validation(
        list(features.records), config.val_fraction, config.seed
    )
    log.info(
        "training on %d videos (%d anomalous), validating on %d held-out training videos (%d anomalous)",
        len(train_records),
        sum(r.label for r in train_records),
        len(val_records),
        sum(r.label for r in val_records),
    )
    batches = BalancedBatches(
        features,
        train_records,
        model_config.train_snippets,
        config.batch_size,
        config.seed,
        config.sample_crops,
        config.cache_bytes,
        config.splice_prob,
    )
    validation = ValidationSet(
        features,
        val_records,
        model_config.train_snippets,
        None
        if validation_frame_labels is None
        else {
            r.name: validation_frame_labels[r.name] for r in val_records if r.name in validation_frame_labels
        },
        config.val_criterion,
    )

    _seed_everything(config.seed)
    model = RefineVAD(model_config).to(device)
    # Its own generator, so the live-window term leaves the other random draws of a seeded run as they were.
    prefix_generator = torch.Generator().manual_seed(config.seed)
    if init_state is not None:
        model.load_state_dict(dict(init_state))
    elif isinstance(model.input_norm, FeatureStandardizer):
        model.input_norm.fit(*feature_moments(features, train_records))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(batches)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, config.min_lr_ratio)
    )

    start_epoch, history = 0, []
    best: dict[str, float] | None = None
    best_epoch, bad_epochs = -1, 0
    last_path, best_path, swa_path = out / LAST, out / BEST, out / SWA
    # 0-based index of the first averaged epoch
    swa_start = None if config.swa_epochs is None else config.epochs - config.swa_epochs
    swa_model = None if swa_start is None else AveragedModel(model)
    if resume and last_path.is_file():
        payload = load_checkpoint_payload(last_path, map_location=device)
        state = payload.get("extra_state") or {}
        if state.get("fingerprint") != json.dumps(fingerprint, sort_keys=True):
            raise ValueError(f"{last_path} was written by a run with another configuration; cannot resume it")
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if "prefix_rng" in state:
            prefix_generator.set_state(state["prefix_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start_epoch = int(state["epoch"]) + 1
        history = json.loads(state["history"])
        best = json.loads(state["best"]) if state.get("best") else None
        best_epoch, bad_epochs = int(state["best_epoch"]), int(state["bad_epochs"])
        if swa_model is not None and "swa" in state:
            swa_model.load_state_dict(state["swa"])
        log.info("resuming from %s at epoch %d", last_path, start_epoch + 1)
    elif resume:
        log.warning("--resume: no %s yet, starting from scratch", last_path)

    base_metadata = {
        "trained": True,
        "seed": config.seed,
        "train_config": config.model_dump(mode="json"),
        "feature_source": features.source,
        "num_train_videos": len(train_records),
        "num_val_videos": len(val_records),
        **dict(metadata or {}),
    }
    if config.scene_margin is not None:
        by_name = {r.name: r for r in features.records}
        calibration = fit_scene_familiarity(
            [r.name for r in (*train_records, *val_records)],
            lambda name: features.load(by_name[name]),
            config.scene_margin,
        )
        base_metadata[SCENE_KEY] = calibration.model_dump(mode="json")
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if bad_epochs >= (config.patience or math.inf):
            stopped_early = True
            break
        if stop_after_epochs is not None and epoch - start_epoch >= stop_after_epochs:
            break
        model.train()
        sums: dict[str, float] = {}
        bar = tqdm(
            batches.epoch(epoch),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for batch in bar:
            output = model(batch.features.to(device), batch.categories.to(device))
            loss, parts = total_loss(
                model,
                output,
                batch.labels.to(device),
                batch.categories.to(device),
                config.loss,
                batch.known_normal,
            )
            if config.loss.lambda_live > 0 and batch.features.shape[1] >= 3:
                live = live_window_consistency(model, batch.features.to(device), prefix_generator)
                loss = loss + config.loss.lambda_live * live
                parts["live"] = live.detach()
                parts["total"] = loss.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            bar.set_postfix(loss=f"{float(parts['total']):.4f}")
        if swa_model is not None and epoch >= swa_start:
            swa_model.update_parameters(model)
        record = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0]}
        record |= {f"train_{k}": v / steps_per_epoch for k, v in sums.items()}
        record |= validation.evaluate(model, config.loss, device)
        history.append(record)
        if _improved(record, best, config.min_delta):
            best, best_epoch, bad_epochs = record, epoch, 0
            save_checkpoint(
                best_path,
                model,
                features.backbone,
                base_metadata | {"epoch": epoch + 1, "metrics": {"validation": record}},
            )
        else:
            bad_epochs += 1
        log.info(
            "epoch %d: loss %.4f, val_auc %.4f, val_loss %.4f%s",
            epoch + 1,
            record.get("train_total", float("nan")),
            record["val_auc"],
            record["val_loss"],
            " (best)" if best_epoch == epoch else "",
        )
        extra = {
            "fingerprint": json.dumps(fingerprint, sort_keys=True),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "prefix_rng": prefix_generator.get_state(),
            "epoch": epoch,
            "history": json.dumps(history),
            "best": json.dumps(best),
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
        }
        if swa_model is not None:
            extra["swa"] = swa_model.state_dict()  # the running average and its count, for resume
        if device.type == "cuda":
            extra["cuda_rng"] = torch.cuda.get_rng_state()
        save_checkpoint(last_path, model, features.backbone, base_metadata | {"epoch": epoch + 1}, extra)
        (out / HISTORY).write_text(json.dumps(history, indent=1))
    if stopped_early:
        log.info(
            "early stopping: no improvement for %d epochs; best epoch %d", config.patience, best_epoch + 1
        )
    if best is None:
        raise RuntimeError("no epoch was trained")
    swa_checkpoint = None
    if swa_model is not None and len(history) == config.epochs:  # not after an interruption
        averaged = int(swa_model.n_averaged)
        if averaged != config.swa_epochs:
            raise RuntimeError(f"SWA averaged {averaged} epochs, expected {config.swa_epochs}")
        # BatchNorm running statistics belong to the weights they were collected with: recompute them for the
        # averaged weights over one pass of training batches (the epoch after the last one: same sampling).
        update_bn(
            (batch.features.to(device) for batch in batches.epoch(config.epochs)), swa_model, device=device
        )
        swa_model.module.eval()
        swa_checkpoint = save_checkpoint(
            swa_path,
            swa_model.module,
            features.backbone,
            base_metadata
            | {
                "epoch": config.epochs,
                "checkpoint_rule": f"swa over the last {config.swa_epochs} epochs",
                "swa_epochs": [swa_start + 1, config.epochs],
            },
        )
    return TrainResult(best_path, last_path, best_epoch + 1, best, history, stopped_early, swa_checkpoint)
