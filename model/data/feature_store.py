"""The project's own feature store: one `.npy` [snippets, D] per video plus a JSON manifest.

Layout::

    ROOT/manifest.json
    ROOT/features/<video name>.npy

The manifest records the backbone identity, the snippet geometry and one entry per video with its video-level
label, category, frame count and fps. Writes are atomic (temp file + rename) so an interrupted extraction can be
resumed: a video is in the store only once both its array and its manifest entry are on disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from model.backbones.identity import BackboneIdentity

FORMAT = "refinevad-features/1"


class VideoEntry(BaseModel):
    name: str
    label: int = Field(ge=0, le=1, description="video-level label: 1 = contains an anomaly")
    category: str | None = Field(default=None, description="anomaly category name; None for normal videos")
    num_frames: int = Field(ge=0)
    fps: float = Field(gt=0)
    num_snippets: int = Field(ge=0)
    source: str | None = Field(default=None, description="where the video was read from (path or URL)")
    group: str | None = Field(
        default=None,
        description="source group (camera, recording) for grouped cross-validation; None = the video",
    )
    licence: str | None = None
    dataset: str | None = Field(default=None, description="the dataset manifest the video came from")


class Manifest(BaseModel):
    format: str = FORMAT
    backbone: BackboneIdentity
    frames_per_snippet: int = 16
    sampled_frames_per_snippet: int = 16
    category_names: list[str] = Field(default_factory=list)
    videos: list[VideoEntry] = Field(default_factory=list)


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_video_name(name: str) -> str:
    """Reject names that could escape the store (path traversal) or collide on disk."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"invalid video name for the feature store: {name!r}")
    return name


class FeatureStore:
    def __init__(self, root: str | os.PathLike[str], manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self._index = {entry.name: i for i, entry in enumerate(manifest.videos)}

    # -- opening -----------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> FeatureStore:
        path = Path(root) / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"no feature store at {root}: {path} is missing")
        manifest = Manifest.model_validate_json(path.read_text())
        if manifest.format != FORMAT:
            raise ValueError(
                f"{path}: unsupported feature store format {manifest.format!r} (expected {FORMAT})"
            )
        return cls(root, manifest)

    @classmethod
    def create_or_open(
        cls,
        root: str | os.PathLike[str],
        backbone: BackboneIdentity,
        frames_per_snippet: int = 16,
        sampled_frames_per_snippet: int = 16,
        category_names: list[str] | None = None,
    ) -> FeatureStore:
        """Open an existing store (resuming) after checking it was made the same way, or create a new one."""
        if (Path(root) / "manifest.json").is_file():
            store = cls.open(root)
            m = store.manifest
            problem = m.backbone.mismatch(backbone)
            if problem or (m.frames_per_snippet, m.sampled_frames_per_snippet) != (
                frames_per_snippet,
                sampled_frames_per_snippet,
            ):
                raise ValueError(
                    f"{root} holds features made differently ({problem or 'other snippet geometry'}); "
                    "use another output folder"
                )
            if category_names:
                for name in category_names:
                    if name not in m.category_names:
                        m.category_names.append(name)
            return store
        manifest = Manifest(
            backbone=backbone,
            frames_per_snippet=frames_per_snippet,
            sampled_frames_per_snippet=sampled_frames_per_snippet,
            category_names=list(category_names or []),
        )
        store = cls(root, manifest)
        store._write_manifest()
        return store

    # -- reading -----------------------------------------------------------------------------------------------
    @property
    def backbone(self) -> BackboneIdentity:
        return self.manifest.backbone

    @property
    def videos(self) -> list[VideoEntry]:
        return self.manifest.videos

    def __len__(self) -> int:
        return len(self.manifest.videos)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.manifest.videos)

    def entry(self, name: str) -> VideoEntry:
        try:
            return self.manifest.videos[self._index[name]]
        except KeyError:
            raise KeyError(f"video {name!r} is not in the feature store at {self.root}") from None

    def groups(self) -> dict[str, str]:
        """Video name -> source group, in store order; a video without a group is its own group."""
        return {v.name: v.group or v.name for v in self.manifest.videos}

    def feature_path(self, name: str) -> Path:
        return self.root / "features" / f"{safe_video_name(name)}.npy"

    def load(self, name: str, mmap: bool = False) -> np.ndarray:
        self.entry(name)
        return np.load(self.feature_path(name), mmap_mode="r" if mmap else None)

    # -- writing -----------------------------------------------------------------------------------------------
    def add(self, entry: VideoEntry, features: np.ndarray) -> None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.backbone.dim:
            raise ValueError(
                f"features for {entry.name!r} have shape {features.shape}, expected [snippets, {self.backbone.dim}]"
            )
        entry = entry.model_copy(update={"num_snippets": int(features.shape[0])})
        _atomic_write_bytes(self.feature_path(entry.name), lambda h: np.save(h, features))
        if entry.category and entry.category not in self.manifest.category_names:
            self.manifest.category_names.append(entry.category)
        if entry.name in self._index:
            self.manifest.videos[self._index[entry.name]] = entry
        else:
            self._index[entry.name] = len(self.manifest.videos)
            self.manifest.videos.append(entry)
        self._write_manifest()

    def _write_manifest(self) -> None:
        text = self.manifest.model_dump_json(indent=1).encode()
        _atomic_write_bytes(self.root / "manifest.json", lambda h: h.write(text))


def write_json_atomic(path: Path, payload: object) -> None:
    data = json.dumps(payload, indent=1).encode()
    _atomic_write_bytes(path, lambda h: h.write(data))
