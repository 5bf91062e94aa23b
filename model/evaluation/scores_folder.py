"""The per-method score folder read by `refinevad evaluate-scores` and written by `refinevad evaluate`.

Layout::

    DIR/<video>.npy              float [T_i]: snippet anomaly scores of one test video
    DIR/<video>.categories.npy   float [C]  : optional category distribution of that video
    DIR/categories.json          optional list of the C category names (default: the annotated categories)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.data.feature_store import safe_video_name

CATEGORY_SUFFIX = ".categories"
CATEGORY_NAMES_FILE = "categories.json"


@dataclass
class ScoresFolder:
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    distributions: dict[str, np.ndarray] = field(default_factory=dict)
    category_names: list[str] | None = None


def read_scores_folder(folder: str | os.PathLike[str]) -> ScoresFolder:
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"scores folder {root} does not exist")
    out = ScoresFolder()
    for path in sorted(root.glob("*.npy")):
        stem = path.name[: -len(".npy")]
        if stem.endswith(CATEGORY_SUFFIX):
            out.distributions[stem[: -len(CATEGORY_SUFFIX)]] = np.load(path).astype(np.float64).reshape(-1)
        else:
            out.scores[stem] = np.load(path).astype(np.float64).reshape(-1)
    names_path = root / CATEGORY_NAMES_FILE
    if names_path.is_file():
        names = json.loads(names_path.read_text())
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{names_path} must hold a JSON list of category names")
        out.category_names = names
    orphans = set(out.distributions) - set(out.scores)
    if orphans:
        raise ValueError(f"{root}: category distributions without scores: {sorted(orphans)[:5]}")
    return out


def write_video_scores(
    folder: str | os.PathLike[str], name: str, scores: np.ndarray, distribution: np.ndarray | None = None
) -> None:
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    safe_video_name(name)
    np.save(root / f"{name}.npy", np.asarray(scores, dtype=np.float32).reshape(-1))
    if distribution is not None:
        np.save(root / f"{name}{CATEGORY_SUFFIX}.npy", np.asarray(distribution, dtype=np.float32).reshape(-1))


def write_category_names(folder: str | os.PathLike[str], names: list[str]) -> None:
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / CATEGORY_NAMES_FILE).write_text(json.dumps(list(names)))
