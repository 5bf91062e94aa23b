"""Train and evaluate RefineVAD on UCSD Ped2 snippet features: config selection on the training clips only, test
figures over seeds, and the shipped default model.

Three steps (see bench/ped2_reproduce.sh for the exact commands that produced model/weights/default.pt):

- `cv`: k-fold cross-validation over the 18 TRAINING clips (stratified: each fold holds out normal and
  anomalous clips). Each fold trains on the other clips (train() holds out its own validation clips for
  best-epoch selection) and scores the held-out clips. Only video-level labels are used: `video_auc` ranks the
  held-out clips by their top-k mean snippet score (the MIL video score); `weak_snippet_auc` ranks all held-out
  snippets with each snippet labelled by its clip's video label (normal clips are normal throughout, so this
  rewards low scores on every normal snippet). The same criteria are also computed from the scores the live
  service would give (`live_window_scores`, W = 32), and for the seed ensemble (the seeds' snippet scores averaged
  per held-out clip). Configs are chosen on these, never on the test split.
- `test`: train on all training clips once per seed and evaluate frame AUC (and the other benchmark metrics) on
  the Ped2 test split; per-seed numbers, mean and spread.
- `ensemble`: `test` for every seed, then seed ensembles (`model.ensemble`) of consecutive groups of `--members`
  seeds (42-46, 47-51, ... for 25 seeds and 5 members), each evaluated like a single run; mean and spread over
  the groups, next to the singles'.
- `ship`: copy one run's checkpoint (the seed, or of an `ensemble` report the seed group, named in advance, not
  the best on test) to the package's default-model path, with the test metrics of all runs in its metadata.

Config files (`model/weights/ped2_*.json`): {"description": str, "model": RefineVADConfig fields,
"train": TrainConfig fields}. Runs use one torch thread each and `--jobs` processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.metrics import roc_auc_score

from model.ablation import select_variants, summarise
from model.checkpoint import (
    combine_checkpoints,
    load_checkpoint,
    load_checkpoint_payload,
    write_checkpoint_payload,
)
from model.config import RefineVADConfig
from model.data.datasets import FeatureSet, VideoRecord
from model.data.feature_store import FeatureStore
from model.evaluation.runner import evaluate_store, ped2_frame_labels
from model.evaluation.splice import splice_metrics, spliced_videos
from model.losses import topk_mean
from model.scoring import live_window_scores, score_features
from model.training import BEST, LAST, SWA, TrainConfig, TrainResult, train

log = logging.getLogger("ped2_train")

TEST_METRICS = ("auc", "ano_auc", "ap", "ap_trapz")
LIVE_WINDOW = 32  # the live service's default window, in snippets


class Ped2RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    checkpoint: Literal["best", "last", "swa"] = Field(
        "best",
        description="best = the epoch train() selects on its held-out training clips; last = the final epoch "
        "of a fixed budget (set train.patience to null), the budget itself chosen by cross-validation; swa = "
        "the Stochastic Weight Average of the budget's last train.swa_epochs epochs (swa.pt)",
    )
    model: dict[str, Any] = Field(default_factory=dict, description="RefineVADConfig fields")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ped2RunConfig:
        return cls.model_validate_json(Path(path).read_text())

    def build(self, features: FeatureSet, seed: int) -> tuple[RefineVADConfig, TrainConfig]:
        model = RefineVADConfig.model_validate(
            self.model
            | {"feature_dim": features.feature_dim, "category_names": list(features.category_names)}
        )
        # One thread per run: runs go in parallel processes on a small shared machine.
        config = TrainConfig.model_validate(self.train | {"seed": seed, "device": "cpu", "threads": 1})
        return model, config

    @model_validator(mode="after")
    def _swa_needs_swa_epochs(self) -> Ped2RunConfig:
        if self.checkpoint == "swa" and self.train.get("swa_epochs") is None:
            raise ValueError(
                'checkpoint "swa" needs train.swa_epochs (the number of final epochs to average)'
            )
        return self

    def chosen(self, result: TrainResult) -> Path:
        if self.checkpoint == "best":
            return result.best_checkpoint
        if self.checkpoint == "last":
            return result.last_checkpoint
        if result.swa_checkpoint is None:
            raise ValueError(
                'checkpoint "swa" but the run wrote no swa.pt: train.swa_epochs is unset or the run did not '
                "complete its budget"
            )
        return result.swa_checkpoint

    def checkpoint_in(self, run_dir: Path) -> Path:
        """The chosen checkpoint of a run that finished earlier, from its output folder (`train()`'s file names).
        Raises `FileNotFoundError` if the run did not write it."""
        path = run_dir / {"best": BEST, "last": LAST, "swa": SWA}[self.checkpoint]
        if not path.is_file():
            raise FileNotFoundError(f'{path}: the run wrote no "{self.checkpoint}" checkpoint')
        return path


def stratified_folds(records: list[VideoRecord], folds: int) -> list[list[str]]:
    """Held-out clip names per fold: normal clips and anomalous clips each dealt round-robin in name order."""
    held: list[list[str]] = [[] for _ in range(folds)]
    for label in (0, 1):
        group = sorted(r.name for r in records if r.label == label)
        for i, name in enumerate(group):
            held[i % folds].append(name)
    return held


def _cv_job(args: tuple[str, str, int, list[str], str]) -> dict[str, Any]:
    config_path, train_store, seed, held_out, out_dir = args
    torch.set_num_threads(1)
    features = FeatureSet.from_store(FeatureStore.open(train_store))
    run = Ped2RunConfig.load(config_path)
    model_config, train_config = run.build(features, seed)
    kept = [r.name for r in features.records if r.name not in held_out]
    result = train(features.subset(kept), out_dir, train_config, model_config, progress=False)
    held_out_scores, spliced = score_held_out(
        load_checkpoint(run.chosen(result)).model, features, features.subset(held_out).records
    )
    return {
        "seed": seed,
        "best_epoch": result.best_epoch,
        "held_out": held_out_scores,
        "spliced": spliced,
    }


def score_held_out(
    model: torch.nn.Module,
    features: FeatureSet,
    records: list[VideoRecord],
    min_window: int = 1,
    startup_lookahead: int = 2,
) -> tuple[list[dict[str, Any]], list[dict[str, list]]]:
    """Snippet scores, offline and through the live window (W = 32; start-up windows padded to `min_window`,
    the first final scores held back until `startup_lookahead` snippets: `live_window_scores`), of the held-out
    clips and of every held-out (normal, anomalous) pair spliced in time (`model.evaluation.splice`: the one CV
    criterion that sees a head spread an anomaly over its context)."""

    def scores(x: np.ndarray) -> dict[str, list]:
        features_t = torch.from_numpy(x)
        live, _ = live_window_scores(
            model, features_t, LIVE_WINDOW, min_window=min_window, startup_lookahead=startup_lookahead
        )
        return {"snippets": score_features(model, features_t).scores.tolist(), "live_snippets": live.tolist()}

    loaded = [features.load(r) for r in records]
    held_out = [{"name": r.name, "label": r.label, **scores(x)} for r, x in zip(records, loaded, strict=True)]
    normal = [x for r, x in zip(records, loaded, strict=True) if not r.label]
    anomalous = [x for r, x in zip(records, loaded, strict=True) if r.label]
    spliced = [scores(x) | {"labels": y.tolist()} for x, y in spliced_videos(normal, anomalous)]
    return held_out, spliced


def cv_metrics(held_out: list[dict[str, Any]], spliced: list[dict[str, Any]], topk_divisor: int) -> dict:
    """Every CV criterion of one seed's (or one ensemble's) held-out scores pooled over the folds; `*_live`: the
    same from the live window's scores."""
    metrics: dict[str, float] = {}
    for key, suffix in (("snippets", ""), ("live_snippets", "_live")):
        scored = [
            s | {"video": float(topk_mean(torch.tensor(s[key])[None], topk_divisor)[0]), "snippets": s[key]}
            for s in held_out
        ]
        pairs = [(s[key], s["labels"]) for s in spliced]
        row = weak_metrics(scored) | splice_metrics(pairs)
        metrics |= {f"{k}{suffix}": v for k, v in row.items()}
    return metrics


def ensemble_average(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Entries (one list per seed, same clips in the same order) with their snippet scores averaged over the
    seeds: what `RefineVADEnsemble` scores, offline and live alike (its score is its members' mean). Raises
    `ValueError` if the seeds' entries are not the same clips (names, or labels of spliced pairs) in order."""
    averaged = []
    for entries in zip(*runs, strict=True):
        first = entries[0]
        if any(e.get("name") != first.get("name") or e.get("labels") != first.get("labels") for e in entries):
            raise ValueError("the seeds' held-out entries are not the same clips in the same order")
        averaged.append(
            first
            | {
                key: np.mean([e[key] for e in entries], axis=0).tolist()
                for key in ("snippets", "live_snippets")
            }
        )
    return averaged


def weak_metrics(scored: list[dict[str, Any]]) -> dict[str, float]:
    """Video-label-only metrics over held-out clips (pooled across folds)."""
    labels = np.array([s["label"] for s in scored])
    video = np.array([s["video"] for s in scored])
    snippet_scores = np.concatenate([s["snippets"] for s in scored])
    snippet_labels = np.concatenate([np.full(len(s["snippets"]), s["label"]) for s in scored])
    normal_max = max(max(s["snippets"]) for s in scored if s["label"] == 0)
    return {
        "video_auc": float(roc_auc_score(labels, video)),
        "weak_snippet_auc": float(roc_auc_score(snippet_labels, snippet_scores)),
        # How many anomalous clips put their top-k score above every normal snippet of the held-out clips.
        "anomalous_above_normal": float(np.mean(video[labels == 1] > normal_max)),
    }


def run_cv(args: argparse.Namespace) -> dict[str, Any]:
    features = FeatureSet.from_store(FeatureStore.open(args.train_features))
    held = stratified_folds(list(features.records), args.folds)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [
        (str(args.config), str(args.train_features), seed, fold, str(args.out / f"seed{seed}" / f"fold{i}"))
        for seed in seeds
        for i, fold in enumerate(held)
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(_cv_job, jobs))
    run = Ped2RunConfig.load(args.config)
    divisor = run.build(features, seeds[0])[0].topk_divisor
    # Each seed's runs in fold order (pool.map keeps job order).
    by_seed = {seed: [r for r in results if r["seed"] == seed] for seed in seeds}
    report = {
        "mode": "cv",
        "config": str(args.config),
        "run_config": run.model_dump(mode="json"),
        "folds": held,
    }
    return report | cv_summary(by_seed, divisor)


def cv_summary(by_seed: dict[int, list[dict[str, Any]]], divisor: int) -> dict[str, Any]:
    """Per-seed CV criteria (`runs`), their mean and spread (`summary`) and the seed ensemble's (`ensemble`:
    per fold, the seeds' scores of the same clips averaged), from each seed's fold results in fold order."""
    per_seed = [
        {
            "seed": seed,
            **cv_metrics(
                [s for r in runs for s in r["held_out"]], [s for r in runs for s in r["spliced"]], divisor
            ),
            "best_epochs": [r["best_epoch"] for r in runs],
        }
        for seed, runs in by_seed.items()
    ]
    folds = range(len(next(iter(by_seed.values()))))
    ensemble = cv_metrics(
        [s for i in folds for s in ensemble_average([runs[i]["held_out"] for runs in by_seed.values()])],
        [s for i in folds for s in ensemble_average([runs[i]["spliced"] for runs in by_seed.values()])],
        divisor,
    )
    keys = [k for k in per_seed[0] if k not in ("seed", "best_epochs")]
    return {
        "runs": per_seed,
        "summary": {k: summarise([r[k] for r in per_seed]) for k in keys},
        "ensemble": {"seeds": list(by_seed), **ensemble},
    }


def live_variants(min_windows: str, lookaheads: str) -> list[tuple[int, int]]:
    """(min_window, startup_lookahead) pairs of `live-cv` from its comma-separated lists: every combination."""
    pairs = [(int(m), int(k)) for m in min_windows.split(",") for k in lookaheads.split(",")]
    for m, k in pairs:
        if not 1 <= m <= LIVE_WINDOW or not 2 <= k <= LIVE_WINDOW:
            raise SystemExit(
                f"--min-windows must be within 1 .. {LIVE_WINDOW} and --lookaheads within 2 .. {LIVE_WINDOW}, "
                f"got {m} and {k}"
            )
    return pairs


def _live_cv_job(
    args: tuple[dict[str, Any], str, str, list[str], int, list[tuple[int, int]]],
) -> dict[tuple[int, int], dict[str, Any]]:
    run_config, train_store, fold_dir, held_out, best_epoch, variants = args
    torch.set_num_threads(1)
    features = FeatureSet.from_store(FeatureStore.open(train_store))
    model = load_checkpoint(Ped2RunConfig.model_validate(run_config).checkpoint_in(Path(fold_dir))).model
    records = features.subset(held_out).records
    results = {}
    for m, k in variants:
        held, spliced = score_held_out(model, features, records, m, k)
        results[m, k] = {"best_epoch": best_epoch, "held_out": held, "spliced": spliced}
    return results


def run_live_cv(args: argparse.Namespace) -> dict[str, Any]:
    """The CV criteria of an earlier `cv` run's fold models (no retraining) under other live-window start-up
    rules: every combination of `--min-windows` (start-up padding; 1 = none) and `--lookaheads` (start-up
    look-ahead; 2 = none). Rows are named `min_window=M,lookahead=K`. Offline criteria do not depend on them."""
    cv = json.loads((args.cv / "report.json").read_text())
    variants = live_variants(args.min_windows, args.lookaheads)
    # The run's own config as the cv report stored it; reports from before it did so name only its path.
    run_config = cv.get("run_config")
    if run_config is None:
        if not Path(cv["config"]).is_file():
            raise SystemExit(
                f"{args.cv}/report.json names its config as {cv['config']}, which is not there from "
                f"{Path.cwd()}: run from where the cv ran"
            )
        run_config = Ped2RunConfig.load(cv["config"]).model_dump(mode="json")
    features = FeatureSet.from_store(FeatureStore.open(args.train_features))
    seeds = [r["seed"] for r in cv["runs"]]
    jobs = [
        (
            run_config,
            str(args.train_features),
            str(args.cv / f"seed{run['seed']}" / f"fold{i}"),
            fold,
            run["best_epochs"][i],
            variants,
        )
        for run in cv["runs"]
        for i, fold in enumerate(cv["folds"])
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(_live_cv_job, jobs))
    divisor = Ped2RunConfig.model_validate(run_config).build(features, seeds[0])[0].topk_divisor
    per_fold = len(cv["folds"])
    rows = {}
    for variant in variants:
        by_seed = {
            seed: [r[variant] for r in results[i * per_fold : (i + 1) * per_fold]]
            for i, seed in enumerate(seeds)
        }
        rows["min_window={},lookahead={}".format(*variant)] = cv_summary(by_seed, divisor)
    return {
        "mode": "live-cv",
        "cv": str(args.cv),
        "config": cv["config"],
        "folds": cv["folds"],
        "variants": rows,
    }


def _test_job(args: tuple[str, str, str, str, int, str]) -> dict[str, Any]:
    config_path, train_store, test_store, ped2_root, seed, out_dir = args
    torch.set_num_threads(1)
    features = FeatureSet.from_store(FeatureStore.open(train_store))
    run = Ped2RunConfig.load(config_path)
    model_config, train_config = run.build(features, seed)
    result = train(
        features,
        out_dir,
        train_config,
        model_config,
        progress=False,
        metadata={"ped2_config": Path(config_path).name, "description": run.description},
    )
    chosen = run.chosen(result)
    metrics = evaluate_store(
        chosen, FeatureStore.open(test_store), ped2_frame_labels(ped2_root), device="cpu"
    )
    return {
        "seed": seed,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "checkpoint": str(chosen),
        **{k: metrics[k] for k in TEST_METRICS},
        "map_avg": metrics["map_iou"]["avg"],
    }


def run_test(args: argparse.Namespace) -> dict[str, Any]:
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [
        (
            str(args.config),
            str(args.train_features),
            str(args.test_features),
            str(args.root),
            seed,
            str(args.out / f"seed{seed}"),
        )
        for seed in seeds
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(_test_job, jobs))
    return {
        "mode": "test",
        "config": str(args.config),
        "runs": runs,
        "summary": {k: summarise([r[k] for r in runs]) for k in (*TEST_METRICS, "map_avg")},
    }


def run_ensemble_test(args: argparse.Namespace) -> dict[str, Any]:
    """Seed ensembles of `args.members` consecutive seeds each, evaluated on the test split like single runs."""
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.members < 2 or len(seeds) % args.members:
        raise SystemExit(f"{len(seeds)} seeds do not split into groups of {args.members} (at least 2 each)")
    description = Ped2RunConfig.load(args.config).description
    singles = run_test(args)
    by_seed = {r["seed"]: r for r in singles["runs"]}
    test_store = FeatureStore.open(args.test_features)
    labels = ped2_frame_labels(args.root)
    runs = []
    for a in range(0, len(seeds), args.members):
        group = seeds[a : a + args.members]
        path = combine_checkpoints(
            [by_seed[s]["checkpoint"] for s in group],
            args.out / f"ensemble_{group[0]}-{group[-1]}.pt",
            {
                "ped2_config": Path(args.config).name,
                "description": f"Seed ensemble of {len(group)} heads (seeds {group[0]}-{group[-1]}, snippet "
                f"probabilities averaged), each: {description}",
            },
        )
        metrics = evaluate_store(path, test_store, labels, device="cpu")
        runs.append(
            {
                "seeds": group,
                "checkpoint": str(path),
                **{k: metrics[k] for k in TEST_METRICS},
                "map_avg": metrics["map_iou"]["avg"],
            }
        )
    return {
        "mode": "ensemble",
        "config": str(args.config),
        "members": args.members,
        "runs": runs,
        "summary": {k: summarise([r[k] for r in runs]) for k in (*TEST_METRICS, "map_avg")},
        "singles": singles,
    }


def run_ablation_ladder(args: argparse.Namespace) -> dict[str, Any]:
    """The spec's ablation variants (model/ablation.py) on top of one Ped2 config, each through `test` (or
    `ensemble`, with `--members` > 1) with the same seeds and the same checkpoint rule, so every row differs from
    the chosen model only by the variant."""
    base = Ped2RunConfig.load(args.config)
    rows = []
    for variant in select_variants(args.variants):
        out = args.out / variant.name
        out.mkdir(parents=True, exist_ok=True)
        derived = base.model_copy(
            update={
                "description": f"{variant.name}: {variant.description}",
                "model": base.model | variant.model,
                "train": base.train | {"loss": base.train.get("loss", {}) | variant.loss},
            }
        )
        config_path = out / "config.json"
        config_path.write_text(derived.model_dump_json(indent=1))
        report_path = out / "report.json"
        previous = json.loads(report_path.read_text()) if report_path.is_file() else None
        # Resumable: a finished variant is reused if it was run the same way (single heads or ensembles).
        if previous is not None and previous.get("members", 1) == args.members:
            report = previous
        else:
            variant_args = argparse.Namespace(**(vars(args) | {"config": config_path, "out": out}))
            # With --members > 1 every row is seed ensembles, as the shipped model is.
            report = (run_ensemble_test if args.members > 1 else run_test)(variant_args)
            report_path.write_text(json.dumps(report, indent=1))
        rows.append({"variant": variant.name, "description": variant.description, **report})
    return {"mode": "ablate", "config": str(args.config), "rows": rows}


def ablation_markdown(report: dict[str, Any]) -> str:
    """Frame AUC / AnoAUC / AP in %, mean ± sample std over seeds (or seed groups), plus each run's AUC."""
    lines = [
        "| variant | AUC | AnoAUC | AP | per-run AUC | description |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        cells = [
            f"{100 * row['summary'][m]['mean']:.1f} ± {100 * row['summary'][m]['std']:.1f}"
            for m in ("auc", "ano_auc", "ap")
        ]
        seeds = " / ".join(f"{100 * r['auc']:.1f}" for r in row["runs"])
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + f" | {seeds} | {row['description']} |")
    return "\n".join(lines) + "\n"


def run_ship(args: argparse.Namespace) -> dict[str, Any]:
    """Copy the named seed's checkpoint (of an `ensemble` report: the ensemble whose first seed it is) to `--to`,
    recording all runs' test metrics in its metadata."""
    report = json.loads(args.report.read_text())
    chosen = next(r for r in report["runs"] if r.get("seed", r.get("seeds", [None])[0]) == args.seed)
    payload = load_checkpoint_payload(chosen["checkpoint"])
    payload.pop("extra_state", None)
    if args.half_weights:
        # Weight matrices in fp16 halve the package (load_checkpoint copies them into fp32 parameters); vectors
        # (biases, norms, the input standardisation's mean and std) keep full precision.
        payload["state_dict"] = {
            k: v.half() if v.is_floating_point() and v.dim() >= 2 else v
            for k, v in payload["state_dict"].items()
        }
        payload["metadata"]["stored_weights"] = "fp16 matrices, fp32 vectors"
    metrics = payload["metadata"].setdefault("metrics", {})
    metrics["ped2_test"] = {k: chosen[k] for k in (*TEST_METRICS, "map_avg")}
    if report["mode"] == "ensemble":
        metrics["ped2_test_over_seed_groups"] = {
            "groups": [r["seeds"] for r in report["runs"]],
            "summary": report["summary"],
        }
        metrics["ped2_test_single_seeds"] = {
            "seeds": [r["seed"] for r in report["singles"]["runs"]],
            "summary": report["singles"]["summary"],
        }
    else:
        metrics["ped2_test_over_seeds"] = {
            "seeds": [r["seed"] for r in report["runs"]],
            "summary": report["summary"],
        }
    payload["metadata"]["dataset"] = "UCSD Ped2 (wvad_split.json train split, video-level labels only)"
    write_checkpoint_payload(payload, args.to)
    return {"mode": "ship", "shipped": str(args.to), "seed": args.seed, **metrics["ped2_test"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("cv", "test", "ablate", "ensemble"):
        p = sub.add_parser(name)
        p.add_argument("--config", type=Path, required=True, help="model/weights/ped2_*.json")
        p.add_argument("--train-features", type=Path, required=True, help="Ped2 train FeatureStore")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--seeds", default="42,43,44,45,46")
        p.add_argument("--jobs", type=int, default=2, help="parallel training processes")
        if name == "cv":
            p.add_argument("--folds", type=int, default=3)
        else:
            p.add_argument("--test-features", type=Path, required=True, help="Ped2 test FeatureStore")
            p.add_argument("--root", type=Path, required=True, help="Ped2 root (test frame labels)")
        if name == "ablate":
            p.add_argument("--variants", default="ladder", help="model/ablation.py sets or variant names")
        if name == "ensemble":
            p.add_argument("--members", type=int, default=5, help="seeds per ensemble (consecutive groups)")
        if name == "ablate":
            p.add_argument(
                "--members", type=int, default=1, help="> 1: each row is seed ensembles of this many seeds"
            )
    p = sub.add_parser(
        "live-cv", help="a cv run's fold models rescored with other live-window start-up rules"
    )
    p.add_argument("--cv", type=Path, required=True, help="the output folder of a `cv` run (its fold models)")
    p.add_argument("--train-features", type=Path, required=True, help="the cv run's Ped2 train FeatureStore")
    p.add_argument("--min-windows", default="1", help="start-up paddings to compare (1 = none)")
    p.add_argument("--lookaheads", default="2", help="start-up look-aheads to compare (2 = none)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jobs", type=int, default=2, help="parallel processes")
    p = sub.add_parser("ship")
    p.add_argument(
        "--report",
        type=Path,
        required=True,
        help="report.json of a `test` or `ensemble` run (or of one `ablate` variant)",
    )
    p.add_argument(
        "--seed", type=int, default=42, help="the run to ship, named in advance (an ensemble: its first seed)"
    )
    p.add_argument("--to", type=Path, required=True)
    p.add_argument(
        "--half-weights", action="store_true", help="store weight matrices in fp16 (half the file size)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.mode == "ship":
        report = run_ship(args)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        runners = {
            "cv": run_cv,
            "test": run_test,
            "ablate": run_ablation_ladder,
            "ensemble": run_ensemble_test,
            "live-cv": run_live_cv,
        }
        report = runners[args.mode](args)
        (args.out / "report.json").write_text(json.dumps(report, indent=1))
        if args.mode == "ablate":
            (args.out / "ablation.md").write_text(ablation_markdown(report))
    if args.mode == "ablate":
        print(ablation_markdown(report))
    else:
        print(json.dumps({k: v for k, v in report.items() if k != "folds"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
