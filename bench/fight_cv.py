"""Source-grouped cross-validation of RefineVAD on surv-fight, with Ped2's training clips in every fold.

`python -m bench.fight_cv --store STORE --out REPORT.json [--seeds 42,43,44] [--folds 5]`
`python -m bench.fight_cv --store STORE --ship CHECKPOINT [--ship-representation motion-v2] [--seeds 42,43]`:
train the config on every training clip (Ped2's 18 and all of surv-fight) once per seed on one representation's
columns and write their seed ensemble (the `v3` model).

STORE holds both datasets' snippet features (`refinevad extract --dataset surv-fight ped2 --backbone two_stream
--motion-descriptor motion-grid-v2 --out STORE`). surv-fight's clips are split into folds by `source` (the
public video a clip was cut from: a camera is never on both sides), stratified by label
(`sklearn.model_selection.StratifiedGroupKFold`); each fold trains the default's config
(`model/weights/ped2_two_stream.json`) on Ped2's 18 training clips plus the other folds' surv-fight clips, with
video-level labels only, and scores the held-out clips. Ped2's test clips are never read.

Representations compared side by side in one run, as column ranges of the same features: `v1` = the first 656
columns (EfficientNet-Lite0 + `motion-grid-v1`: today's default's features, exactly), `v2` = all 724
(`motion-grid-v2` adds the motion-dynamics block), `motion-v2` = columns 320-723 (exactly what the motion
backbone alone gives with `motion-grid-v2`) and `dynamics` = the 68-number block alone (no backbone gives it; a
CV reference only).

Per representation, seed and over seeds (mean +- std): clip AUC of the MIL video score (top-k mean), accuracy
at the event threshold (0.5), the same AUC within each frame size with >= 20 clips, the share of fight clips
above the threshold whose dominant category is `Fighting`, and a metadata-only baseline (logistic regression
on frame size, fps and length, same folds) that the model must beat by far.
"""

from __future__ import annotations

import argparse
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.ped2_train import Ped2RunConfig
from model.backbones.identity import BackboneIdentity
from model.backbones.motion import DESCRIPTOR_VERSION, DYNAMICS_VERSION
from model.backbones.motion import VERSIONS as MOTION_VERSIONS
from model.checkpoint import combine_checkpoints, load_checkpoint
from model.data.datasets import FeatureSet, VideoRecord
from model.data.feature_store import FeatureStore
from model.losses import topk_mean
from model.scoring import score_features
from model.training import train

log = logging.getLogger("bench.fight_cv")
CONFIG = Path(__file__).parents[1] / "model" / "weights" / "ped2_two_stream.json"
APPEARANCE_DIM, V1_DIM = 320, 656  # two-stream v2 columns: appearance, motion-grid-v1, the dynamics block
# Column ranges of the two-stream v2 features compared side by side.
REPRESENTATIONS = {
    "v1": (0, V1_DIM),  # today's default's features, exactly
    "v2": (0, None),  # all 724
    "motion-v2": (APPEARANCE_DIM, None),  # what the motion backbone alone gives with motion-grid-v2
    "dynamics": (V1_DIM, None),  # the 68-number dynamics block alone (no backbone gives it: CV only)
}
THRESHOLD = 0.5
FIGHTING = "Fighting"


@dataclass(frozen=True)
class Columns(FeatureSet):
    """Columns `start:stop` of a feature set (the v1 features inside v2's, or one stream)."""

    start: int = 0
    stop: int | None = None

    def load(self, record: VideoRecord, crop: int = 0) -> np.ndarray:
        x = np.load(record.crops[crop]).astype(np.float32, copy=False)
        return np.ascontiguousarray(x[:, self.start : self.stop])


def columns(features: FeatureSet, rep: str) -> FeatureSet:
    """The representation `rep`'s columns, with the identity of the backbone that gives exactly them."""
    start, stop = REPRESENTATIONS[rep]
    if (start, stop) == (0, None):
        return features
    b = features.backbone
    dim = (stop or b.dim) - start
    if rep == "v1":
        identity = b.model_copy(
            update={
                "architecture": b.architecture.replace("+dynamics-240x180", ""),
                "weights": b.weights.replace(DYNAMICS_VERSION, DESCRIPTOR_VERSION),
                "dim": dim,
            }
        )
    elif rep == "motion-v2":
        architecture, motion_dim = MOTION_VERSIONS[DYNAMICS_VERSION]
        assert motion_dim == dim
        identity = BackboneIdentity(
            name="motion", architecture=architecture, weights=DYNAMICS_VERSION, dim=dim
        )
    else:
        identity = b.model_copy(update={"architecture": f"{b.architecture}[{start}:{stop}]", "dim": dim})
    return Columns(features.records, features.category_names, dim, identity, features.source, start, stop)


def fight_and_training(store: FeatureStore) -> tuple[FeatureSet, list[str], list[str]]:
    """(the store's features, surv-fight clip names, Ped2 training clip names)."""
    features = FeatureSet.from_store(store)
    entries = {v.name: v for v in store}
    fight = [n for n, v in entries.items() if v.dataset == "surv-fight"]
    ped2_train = [n for n, v in entries.items() if v.dataset == "ped2"]  # a train store: its training clips
    return features, fight, ped2_train


def _train_run(
    store_path: str, rep: str, seed: int, names: list[str], out_dir: str
) -> tuple[FeatureSet, Path, int]:
    """Train the default's config on `names` (one torch thread: runs go in parallel processes); returns the
    features, the chosen checkpoint and the top-k divisor of the MIL video score."""
    torch.set_num_threads(1)
    features = columns(FeatureSet.from_store(FeatureStore.open(store_path)), rep)
    run = Ped2RunConfig.load(CONFIG)
    model_config, train_config = run.build(features, seed)
    result = train(features.subset(names), out_dir, train_config, model_config, progress=False)
    return features, run.chosen(result), model_config.topk_divisor


def _fold_job(args: tuple[str, str, int, list[str], list[str], str]) -> dict[str, Any]:
    store_path, rep, seed, train_names, held_names, out_dir = args
    features, checkpoint, divisor = _train_run(store_path, rep, seed, train_names, out_dir)
    model = load_checkpoint(checkpoint).model
    rows = []
    for record in features.subset(held_names).records:
        out = score_features(model, torch.from_numpy(features.load(record)))
        scores = out.scores
        video = float(topk_mean(scores[None], divisor)[0])
        category = features.category_names[int(torch.argmax(out.category_weights))]
        rows.append({"name": record.name, "label": record.label, "video": video, "category": category})
    return {"rep": rep, "seed": seed, "rows": rows}


def clip_metadata(store: FeatureStore, names: list[str]) -> dict[str, tuple[int, int, float, int]]:
    """name -> (height, width, fps, frames), read from the clip files' headers."""
    entries = {v.name: v for v in store}
    meta = {}
    for name in names:
        cap = cv2.VideoCapture(entries[name].source or "")
        meta[name] = (
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            float(entries[name].fps),
            int(entries[name].num_frames),
        )
        cap.release()
    return meta


def metrics(rows: list[dict[str, Any]], sizes: dict[str, str]) -> dict[str, float]:
    y = np.array([r["label"] for r in rows])
    p = np.array([r["video"] for r in rows])
    size = np.array([sizes[r["name"]] for r in rows])
    strata = {
        s: float(roc_auc_score(y[size == s], p[size == s]))
        for s in np.unique(size)
        if (size == s).sum() >= 20 and len(set(y[size == s])) == 2
    }
    flagged = [r for r in rows if r["label"] == 1 and r["video"] >= THRESHOLD]
    return {
        "clip_auc": float(roc_auc_score(y, p)),
        "accuracy": float(accuracy_score(y, p >= THRESHOLD)),
        "strata_auc_mean": float(np.mean(list(strata.values()))),
        **{f"strata_auc_{s}": v for s, v in strata.items()},
        "fights_above_threshold": float(np.mean(p[y == 1] >= THRESHOLD)),
        "named_fighting": float(np.mean([r["category"] == FIGHTING for r in flagged])) if flagged else 0.0,
    }


def _ship_job(args: tuple[str, str, int, list[str], str]) -> str:
    store_path, rep, seed, names, out_dir = args
    return str(_train_run(store_path, rep, seed, names, out_dir)[1])


def ship(args: argparse.Namespace, names: list[str]) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    rep = args.ship_representation
    jobs = [(str(args.store), rep, seed, names, str(args.work / "ship" / f"seed{seed}")) for seed in seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        members = list(pool.map(_ship_job, jobs))
    features = {
        "v1": "two-stream features (motion-grid-v1)",
        "v2": "two-stream features with the motion-grid-v2 descriptor",
        "motion-v2": "motion-grid-v2 features (the motion backbone alone: no appearance network)",
        "dynamics": "the motion-dynamics block alone",
    }[rep]
    description = (
        f"v3: RefineVAD (the default's config, model/weights/ped2_two_stream.json) on {features}, trained on "
        "UCSD Ped2's 18 weak training clips and the 238 surv-fight clips (video-level labels only); categories "
        f"Biking, Fighting, Skateboarding, Vehicle; seed ensemble of seeds {seeds}. Chosen over the other "
        "representations by bench.fight_cv. Figures: MODEL_CARD.md, 'v3'."
    )
    combine_checkpoints(members, args.ship, {"description": description})
    log.info("wrote %s (ensemble of %s)", args.ship, members)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="the CV report (JSON); required without --ship")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fight-cv"))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--representations", default=",".join(REPRESENTATIONS))
    parser.add_argument("--ship", type=Path, help="train on every clip and write the seed ensemble here")
    parser.add_argument("--ship-representation", default="v2", choices=sorted(REPRESENTATIONS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = FeatureStore.open(args.store)
    features, fight, ped2_train = fight_and_training(store)
    if args.ship:
        return ship(args, ped2_train + fight)
    if args.out is None:
        parser.error("--out is required without --ship")
    if not fight or len(ped2_train) != 18:
        raise SystemExit(
            f"the store needs surv-fight and Ped2's 18 training clips; has {len(fight)}, {len(ped2_train)}"
        )
    groups = features.groups()
    label_of = {r.name: r.label for r in features.records}
    labels = np.array([label_of[n] for n in fight])
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs, folds_of = [], {}
    for seed in seeds:
        split = StratifiedGroupKFold(args.folds, shuffle=True, random_state=seed)
        folds = [
            [fight[i] for i in held]
            for _, held in split.split(np.zeros(len(fight)), labels, [groups[n] for n in fight])
        ]
        folds_of[seed] = folds
        for rep in args.representations.split(","):
            for k, held in enumerate(folds):
                train_names = ped2_train + [n for n in fight if n not in set(held)]
                out = args.work / rep / f"seed{seed}" / f"fold{k}"
                jobs.append((str(args.store), rep, seed, train_names, held, str(out)))
    log.info("%d training runs (%d folds x %d seeds x representations)", len(jobs), args.folds, len(seeds))
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for done in pool.map(_fold_job, jobs):
            results.setdefault((done["rep"], done["seed"]), []).extend(done["rows"])
            log.info(
                "done %s seed %d (%d clips so far)",
                done["rep"],
                done["seed"],
                len(results[done["rep"], done["seed"]]),
            )
    meta = clip_metadata(store, fight)
    sizes = {n: f"{h}x{w}" for n, (h, w, _, _) in meta.items()}
    report: dict[str, Any] = {"folds": args.folds, "seeds": seeds, "clips": len(fight), "representations": {}}
    for rep in args.representations.split(","):
        per_seed = {seed: metrics(results[rep, seed], sizes) for seed in seeds}
        keys = per_seed[seeds[0]].keys()
        report["representations"][rep] = {
            "per_seed": per_seed,
            "mean": {k: float(np.mean([m.get(k, np.nan) for m in per_seed.values()])) for k in keys},
            "std": {k: float(np.std([m.get(k, np.nan) for m in per_seed.values()])) for k in keys},
        }
    baseline = []
    x_meta = np.array([meta[n] for n in fight], float)
    for seed in seeds:
        p = np.zeros(len(fight))
        index = {n: i for i, n in enumerate(fight)}
        for held in folds_of[seed]:
            te = np.array([index[n] for n in held])
            tr = np.setdiff1d(np.arange(len(fight)), te)
            m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_meta[tr], labels[tr])
            p[te] = m.predict_proba(x_meta[te])[:, 1]
        baseline.append(roc_auc_score(labels, p))
    report["metadata_baseline_auc"] = {"mean": float(np.mean(baseline)), "std": float(np.std(baseline))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for rep, r in report["representations"].items():
        m, s = r["mean"], r["std"]
        log.info(
            "%s: clip AUC %.3f +- %.3f, accuracy %.3f +- %.3f, strata AUC %.3f, named Fighting %.2f",
            rep,
            m["clip_auc"],
            s["clip_auc"],
            m["accuracy"],
            s["accuracy"],
            m["strata_auc_mean"],
            m["named_fighting"],
        )
    log.info("metadata-only baseline: clip AUC %.3f +- %.3f", *report["metadata_baseline_auc"].values())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
