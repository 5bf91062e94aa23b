"""UCSD Ped2 as this project uses it: the weakly supervised split, clip frame folders and test frame labels.

Reads `ROOT/wvad_split.json` (train/test lists: normal clips, and anomalous clips with their category) and
`ROOT/test_frame_labels.json` (frame labels of the 12 anomalous testing clips). A clip `training/frames/07`
is named `training_07` in feature stores and results. Training clips only carry video-level labels: frame
labels are served for the test split only, so they cannot leak into training.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from model.video.source import IMAGE_SUFFIXES

PED2_FPS = 10.0
Split = Literal["train", "test"]


class Ped2Clip(BaseModel):
    name: str = Field(description="store name, e.g. testing_01")
    folder: str = Field(description="frame folder relative to the dataset root, e.g. testing/frames/01")
    split: Split
    label: int = Field(ge=0, le=1, description="video-level label: 1 = contains an anomaly")
    category: str | None = None


def clip_name(folder: str) -> str:
    """'testing/frames/01' -> 'testing_01' (unique across Ped2 and safe as a file name)."""
    parts = Path(folder).parts
    if len(parts) != 3 or parts[1] != "frames":
        raise ValueError(f"unexpected Ped2 clip folder {folder!r} (expected <training|testing>/frames/<NN>)")
    return f"{parts[0]}_{parts[2]}"


class Ped2Dataset:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        split_path = self.root / "wvad_split.json"
        if not split_path.is_file():
            raise FileNotFoundError(f"no Ped2 split at {split_path}")
        raw = json.loads(split_path.read_text())
        self.fps = float(raw.get("fps", PED2_FPS))
        self.clips: dict[str, Ped2Clip] = {}
        for split in ("train", "test"):
            part = raw[split]
            for folder in part.get("normal", []):
                self._add(Ped2Clip(name=clip_name(folder), folder=folder, split=split, label=0))
            for folder, category in part.get("anomalous", {}).items():
                clip = Ped2Clip(
                    name=clip_name(folder), folder=folder, split=split, label=1, category=category
                )
                self._add(clip)

    def _add(self, clip: Ped2Clip) -> None:
        if clip.name in self.clips:
            raise ValueError(f"{self.root}/wvad_split.json lists {clip.folder} twice")
        self.clips[clip.name] = clip

    def split(self, split: Split) -> list[Ped2Clip]:
        return [clip for clip in self.clips.values() if clip.split == split]

    @property
    def category_names(self) -> list[str]:
        """Every category of either split, sorted, so train and test stores index categories alike."""
        return sorted({clip.category for clip in self.clips.values() if clip.category})

    def path(self, clip: Ped2Clip | str) -> Path:
        clip = self.clips[clip] if isinstance(clip, str) else clip
        return self.root / clip.folder

    def extraction_inputs(self, split: Split) -> list[tuple[str, str, int, str | None]]:
        """(name, frame folder, video label, category) of a split's clips, as `extract_to_store` takes them."""
        return [(c.name, str(self.path(c)), c.label, c.category) for c in self.split(split)]

    def frame_count(self, clip: Ped2Clip | str) -> int:
        folder = self.path(clip)
        return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    @cached_property
    def _test_frame_labels(self) -> dict[str, list[int]]:
        raw = json.loads((self.root / "test_frame_labels.json").read_text())
        return raw["frames"]

    def frame_labels(self, clip: Ped2Clip | str) -> np.ndarray:
        """Frame-level ground truth [frames] (uint8, 1 = anomalous) of a test-split clip."""
        clip = self.clips[clip] if isinstance(clip, str) else clip
        if clip.split != "test":
            raise ValueError(f"{clip.name} is a training clip: only video-level labels may be used for it")
        if clip.label == 0:
            return np.zeros(self.frame_count(clip), dtype=np.uint8)
        key = Path(clip.folder).name
        if not clip.folder.startswith("testing/") or key not in self._test_frame_labels:
            raise KeyError(f"no frame labels for {clip.folder} in test_frame_labels.json")
        labels = np.asarray(self._test_frame_labels[key], dtype=np.uint8)
        frames = self.frame_count(clip)
        if len(labels) != frames:
            raise ValueError(f"{clip.folder}: {len(labels)} frame labels for {frames} frames")
        return labels
