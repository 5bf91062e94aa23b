"""The spec's ablation ladder and injection variants: train and evaluate each over several seeds, tabulate.

Ladder (paper Table "ablation"): base MLP+MIL (no MoTAR, no category injection, no category loss) -> +MoTAR ->
+category injection with the hard top-1 category -> +soft category weights (the full model). Two extra rows show
the effect of L_GMM (full without it) and the three injection variants (linear, add&norm+FFN, cross-attention)
of the appendix, all with soft weights. Each run trains with the same TrainConfig (its seed replaced), selects its
epoch on the validation split of the training videos, and is scored on the test set with the benchmark protocol.

Runs are written to OUT/runs/<variant>/seed<k>/ (checkpoints, metrics.json); an existing metrics.json is reused,
so an interrupted ablation resumes where it stopped. The table goes to OUT/ablation.md and OUT/ablation.json.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from model.config import RefineVADConfig
from model.data.datasets import FeatureSet
from model.evaluation.ground_truth import VideoTruth
from model.evaluation.runner import evaluate_features
from model.losses import LossConfig
from model.training import TrainConfig, train

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("auc", "ano_auc", "ap", "ap_trapz", "map_avg")


class AblationVariant(BaseModel):
    name: str
    description: str
    model: dict[str, Any] = Field(default_factory=dict, description="RefineVADConfig fields")
    loss: dict[str, Any] = Field(default_factory=dict, description="LossConfig fields")


_NO_CATEGORY = {"injection": "none"}
_NO_CATEGORY_LOSS = {"use_cat": False, "use_gmm": False}

LADDER: tuple[AblationVariant, ...] = (
    AblationVariant(
        name="base",
        description="MLP + MIL (no MoTAR, no category injection, no category or GMM loss)",
        model={"use_motar": False, **_NO_CATEGORY},
        loss=_NO_CATEGORY_LOSS,
    ),
    AblationVariant(
        name="+motar",
        description="+ MoTAR (adaptive shift + temporal Transformer)",
        model={"use_motar": True, **_NO_CATEGORY},
        loss=_NO_CATEGORY_LOSS,
    ),
    AblationVariant(
        name="+injection-hard",
        description="+ category injection (cross-attention) with the hard top-1 category, + L_cat",
        model={"use_motar": True, "injection": "cross_attention", "soft_weights": False},
        loss={"use_cat": True, "use_gmm": False},
    ),
    AblationVariant(
        name="full",
        description="+ soft category weights + L_GMM (the full model)",
        model={"use_motar": True, "injection": "cross_attention", "soft_weights": True},
        loss={"use_cat": True, "use_gmm": True},
    ),
    AblationVariant(
        name="full-no-gmm",
        description="full model without L_GMM (shows what the GMM smoothing loss adds)",
        model={"use_motar": True, "injection": "cross_attention", "soft_weights": True},
        loss={"use_cat": True, "use_gmm": False},
    ),
)

INJECTION_VARIANTS: tuple[AblationVariant, ...] = tuple(
    AblationVariant(
        name=f"inject-{kind}",
        description=f"full model with {label} injection",
        model={"use_motar": True, "injection": kind, "soft_weights": True},
        loss={"use_cat": True, "use_gmm": True},
    )
    for kind, label in (
        ("linear", "linear (F = X + Linear(v))"),
        ("addnorm_ffn", "add&norm + FFN"),
        ("cross_attention", "cross-attention"),
    )
)

VARIANT_SETS: dict[str, tuple[AblationVariant, ...]] = {
    "ladder": LADDER,
    "injection": INJECTION_VARIANTS,
    "all": LADDER + INJECTION_VARIANTS,
}


def select_variants(spec: str) -> list[AblationVariant]:
    """Comma-separated set names (ladder, injection, all) or variant names."""
    by_name = {v.name: v for v in LADDER + INJECTION_VARIANTS}
    chosen: dict[str, AblationVariant] = {}
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token in VARIANT_SETS:
            chosen |= {v.name: v for v in VARIANT_SETS[token]}
        elif token in by_name:
            chosen[token] = by_name[token]
        else:
            raise ValueError(
                f"unknown ablation variant {token!r}; sets {list(VARIANT_SETS)}, variants {list(by_name)}"
            )
    return list(chosen.values())


def _flatten(metrics: dict[str, Any]) -> dict[str, float | None]:
    flat = {k: metrics.get(k) for k in ("auc", "ano_auc", "ap", "ap_trapz")}
    flat["map_avg"] = metrics["map_iou"]["avg"]
    return flat


def summarise(values: Sequence[float | None]) -> dict[str, float | int | None]:
    present = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if present.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(present.mean()),
        "std": float(present.std(ddof=1)) if present.size > 1 else 0.0,
        "min": float(present.min()),
        "max": float(present.max()),
        "n": int(present.size),
    }


def run_ablation(
    train_features: FeatureSet,
    test_features: FeatureSet,
    truth: Sequence[VideoTruth],
    out_dir: str | os.PathLike[str],
    seeds: Sequence[int],
    variants: Sequence[AblationVariant] = LADDER,
    train_config: TrainConfig | None = None,
    model_overrides: dict[str, Any] | None = None,
    exclude_normal: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate every variant x seed; returns (and writes) the report."""
    out = Path(out_dir)
    train_config = train_config or TrainConfig()
    rows = []
    for variant in variants:
        per_seed = []
        for seed in seeds:
            run_dir = out / "runs" / variant.name / f"seed{seed}"
            metrics_path = run_dir / "metrics.json"
            if metrics_path.is_file():
                metrics = json.loads(metrics_path.read_text())
                log.info("%s seed %d: reusing %s", variant.name, seed, metrics_path)
            else:
                model_config = RefineVADConfig.model_validate(
                    dict(model_overrides or {})
                    | variant.model
                    | {
                        "feature_dim": train_features.feature_dim,
                        "category_names": list(train_features.category_names),
                    }
                )
                loss = LossConfig.model_validate(train_config.loss.model_dump() | variant.loss)
                config = train_config.model_copy(update={"seed": seed, "loss": loss})
                log.info("ablation %s, seed %d", variant.name, seed)
                result = train(
                    train_features,
                    run_dir,
                    config,
                    model_config,
                    resume=(run_dir / "last.pt").is_file(),  # continue an interrupted run
                    progress=progress,
                    metadata={"ablation_variant": variant.name},
                )
                metrics = evaluate_features(
                    result.best_checkpoint,
                    test_features,
                    truth,
                    exclude_normal=exclude_normal,
                    device=train_config.device,
                )
                metrics["best_epoch"] = result.best_epoch
                metrics_path.write_text(json.dumps(metrics, indent=1))
            per_seed.append({"seed": seed, **_flatten(metrics), "best_epoch": metrics.get("best_epoch")})
        rows.append(
            {
                "variant": variant.name,
                "description": variant.description,
                "runs": per_seed,
                "summary": {m: summarise([r[m] for r in per_seed]) for m in METRICS},
            }
        )
    report = {
        "seeds": list(seeds),
        "train_features": train_features.source,
        "test_features": test_features.source,
        "num_test_videos": len(truth),
        "map_iou_classes": "anomaly categories only" if exclude_normal else "Normal + anomaly categories",
        "train_config": train_config.model_dump(mode="json"),
        "model_overrides": dict(model_overrides or {}),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(report, indent=1))
    (out / "ablation.md").write_text(format_markdown(report))
    return report


def _cell(summary: dict[str, Any], scale: float) -> str:
    if summary["mean"] is None:
        return "n/a"
    return f"{scale * summary['mean']:.2f} ± {scale * summary['std']:.2f}"


def format_markdown(report: dict[str, Any]) -> str:
    """Mean ± sample std over seeds (AUC/AP in %, mAP already x100)."""
    header = "| variant | AUC | AnoAUC | AP | AP (trapz) | mAP@IoU avg | description |"
    lines = [
        f"Ablation over seeds {report['seeds']} (mean ± std; test set {report['test_features']}, "
        f"{report['num_test_videos']} videos; mAP over {report['map_iou_classes']}).",
        "",
        header,
        "|" + "---|" * 7,
    ]
    for row in report["rows"]:
        s = row["summary"]
        cells = [_cell(s[m], 1.0 if m == "map_avg" else 100.0) for m in METRICS]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + f" | {row['description']} |")
    return "\n".join(lines) + "\n"
