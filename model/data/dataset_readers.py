"""Readers that turn the known public datasets' own layouts into `DatasetManifest`s.

- `ped2`: UCSD Ped2 as `model.data.ped2` reads it (the weakly supervised train/test split with categories).
  Each clip folder is its own recording, so its own group.
- `surv-fight`: the Surveillance Camera Fight Dataset (`clips.csv`: file, fight 1/0, source). Fights are
  category `Fighting`; the group is the clip's `source` (the public video it was cut from).
- `ped1`: the small part of UCSD Ped1 kept in `shared/`: `normal/<scene>` frame folders as normal training
  footage, `testing/<clip>` folders listed in `test_frame_labels.json` as test clips.

`dataset_manifest(name, root)` picks the reader; `default_root(name)` is `$REFINEVAD_SHARED_DATA/<name>` when
that variable is set.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.data.manifest import DatasetEntry, DatasetManifest, ManifestError
from model.data.ped2 import Ped2Dataset

UCSD_LICENCE = "UCSD Anomaly Detection Dataset: research use"
SURV_FIGHT_LICENCE = "MIT"
FIGHTING = "Fighting"
# Ped1's official test clips with their anomaly's kind (the README: a cyclist rides among the pedestrians).
PED1_TEST_CATEGORIES = {"Test001": "Biking"}


def ped2_manifest(root: str | os.PathLike[str]) -> DatasetManifest:
    dataset = Ped2Dataset(root)
    entries = [
        DatasetEntry(
            path=clip.folder,
            label=clip.label,
            category=clip.category,
            group=clip.name,
            split=clip.split,
            name=clip.name,
        )
        for clip in dataset.clips.values()
    ]
    return DatasetManifest(
        name="ped2",
        description="UCSD Ped2: one campus walkway, weakly supervised split (Biking, Skateboarding, Vehicle)",
        fps=dataset.fps,
        licence=UCSD_LICENCE,
        root=str(Path(root).resolve()),
        entries=entries,
    )


def surv_fight_manifest(root: str | os.PathLike[str]) -> DatasetManifest:
    root = Path(root)
    table = root / "clips.csv"
    if not table.is_file():
        raise FileNotFoundError(f"no surv-fight clip list at {table}")
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "fight", "source"} <= set(reader.fieldnames or []):
            raise ManifestError(f"{table}: expected the columns file, fight, source; got {reader.fieldnames}")
        entries = []
        for row in reader:
            if row["fight"] not in ("0", "1"):
                raise ManifestError(
                    f"{table} line {reader.line_num}: fight must be 1 or 0, got {row['fight']!r}"
                )
            fight = row["fight"] == "1"
            entries.append(
                DatasetEntry(
                    path=row["file"],
                    label=int(fight),
                    category=FIGHTING if fight else None,
                    group=row["source"],
                )
            )
    return DatasetManifest(
        name="surv-fight",
        description="Surveillance Camera Fight Dataset (Akti et al., IPTA 2019): real CCTV fights and no-fights",
        licence=SURV_FIGHT_LICENCE,
        root=str(root.resolve()),
        entries=entries,
    )


def _ped1_test_labels(root: Path) -> dict[str, list[int]]:
    path = root / "test_frame_labels.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def ped1_manifest(root: str | os.PathLike[str]) -> DatasetManifest:
    root = Path(root)
    normal = sorted(p for p in (root / "normal").glob("*") if p.is_dir())
    if not normal:
        raise FileNotFoundError(f"no Ped1 normal frame folders under {root / 'normal'}")
    entries = [
        DatasetEntry(path=f"normal/{p.name}", label=0, group=f"ped1_{p.name}", name=f"ped1_{p.name}")
        for p in normal
    ]
    for clip, labels in sorted(_ped1_test_labels(root).items()):
        anomalous = any(labels)
        if anomalous and clip not in PED1_TEST_CATEGORIES:
            raise ManifestError(f"{root}: Ped1 test clip {clip} is anomalous but its category is not known")
        entries.append(
            DatasetEntry(
                path=f"testing/{clip}",
                label=int(anomalous),
                category=PED1_TEST_CATEGORIES.get(clip) if anomalous else None,
                group=f"ped1_{clip}",
                split="test",
                name=f"ped1_{clip}",
            )
        )
    return DatasetManifest(
        name="ped1",
        description="UCSD Ped1 (part): a second walkway camera; normal footage and a test clip with frame labels",
        fps=10.0,
        licence=UCSD_LICENCE,
        root=str(root.resolve()),
        entries=entries,
    )


def ped1_frame_labels(root: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Frame-level ground truth of Ped1's test clips, by store name (`ped1_Test001`): uint8 [frames]."""
    return {f"ped1_{clip}": np.asarray(v, np.uint8) for clip, v in _ped1_test_labels(Path(root)).items()}


READERS: dict[str, Callable[[str | os.PathLike[str]], DatasetManifest]] = {
    "ped2": ped2_manifest,
    "surv-fight": surv_fight_manifest,
    "ped1": ped1_manifest,
}


def default_root(name: str) -> Path | None:
    shared = os.environ.get("REFINEVAD_SHARED_DATA")
    return Path(shared) / name if shared else None


def dataset_manifest(name: str, root: str | os.PathLike[str]) -> DatasetManifest:
    """The manifest of a known dataset read from its folder. Raises KeyError for an unknown name."""
    if name not in READERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    return READERS[name](root)
