"""Synthetic snippet features with category-structured anomalies, for end-to-end tests of training and evaluation.

A normal video is a slowly drifting background: a per-video scene offset plus AR(1) noise in every channel. An
anomalous video is a normal one with one anomalous interval in which a pattern is added: a direction shared by all
anomalies plus a direction of its category, so both detection and categorisation are learnable and neither is
trivial at the default noise level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field
from scipy.signal import lfilter

from model.backbones.identity import BackboneIdentity
from model.data.feature_store import FeatureStore, VideoEntry
from model.evaluation.ground_truth import FrameLabels


class SyntheticSpec(BaseModel):
    dim: int = Field(32, gt=0)
    category_names: list[str] = Field(default_factory=lambda: ["Fire", "Fight", "Theft"], min_length=1)
    min_snippets: int = Field(24, ge=2)
    max_snippets: int = Field(64, ge=2)
    anomaly_fraction: tuple[float, float] = (0.15, 0.4)
    signal: float = Field(
        0.6, ge=0, description="amplitude of the anomaly pattern per channel (noise std is 1)"
    )
    shared_weight: float = Field(0.5, ge=0, description="share of the pattern common to every category")
    scene_std: float = Field(0.5, ge=0)
    ar: float = Field(0.3, ge=0, lt=1, description="AR(1) coefficient of the background noise")
    frames_per_snippet: int = 16
    pattern_seed: int = Field(1234, description="seed of the category directions (shared by all splits)")


@dataclass(frozen=True)
class SyntheticVideo:
    name: str
    features: np.ndarray  # [T, D] float32
    snippet_labels: np.ndarray  # [T] uint8
    category: str | None


class SyntheticGenerator:
    def __init__(self, spec: SyntheticSpec | None = None) -> None:
        self.spec = spec or SyntheticSpec()
        patterns = np.random.default_rng(self.spec.pattern_seed)
        self.shared = patterns.standard_normal(self.spec.dim)
        self.directions = patterns.standard_normal((len(self.spec.category_names), self.spec.dim))

    def video(self, rng: np.random.Generator, name: str, category: str | None) -> SyntheticVideo:
        s = self.spec
        length = int(rng.integers(s.min_snippets, s.max_snippets + 1))
        noise = rng.standard_normal((length, s.dim))
        # AR(1) along time with unit stationary variance: x_t = a x_{t-1} + sqrt(1 - a^2) e_t
        background = lfilter([np.sqrt(1 - s.ar**2)], [1.0, -s.ar], noise, axis=0)
        features = background + s.scene_std * rng.standard_normal(s.dim)
        labels = np.zeros(length, dtype=np.uint8)
        if category is not None:
            c = s.category_names.index(category)
            span = max(2, round(rng.uniform(*s.anomaly_fraction) * length))
            start = int(rng.integers(0, length - span + 1))
            pattern = s.shared_weight * self.shared + (1 - s.shared_weight) * self.directions[c]
            features[start : start + span] += s.signal * pattern
            labels[start : start + span] = 1
        return SyntheticVideo(name, features.astype(np.float32), labels, category)

    def videos(
        self, num_normal: int, num_anomalous: int, seed: int, prefix: str = "video"
    ) -> list[SyntheticVideo]:
        rng = np.random.default_rng(seed)
        names = self.spec.category_names
        out = [self.video(rng, f"{prefix}_n{i:04d}", None) for i in range(num_normal)]
        out += [self.video(rng, f"{prefix}_a{i:04d}", names[i % len(names)]) for i in range(num_anomalous)]
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    def backbone(self) -> BackboneIdentity:
        return BackboneIdentity(
            name="synthetic",
            architecture="category-patterns",
            weights=str(self.spec.pattern_seed),
            dim=self.spec.dim,
        )

    def write_store(
        self,
        root: str | os.PathLike[str],
        num_normal: int,
        num_anomalous: int,
        seed: int,
        prefix: str = "video",
    ) -> tuple[FeatureStore, FrameLabels]:
        """A project feature store of synthetic videos plus their frame labels (16 frames per snippet)."""
        store = FeatureStore.create_or_open(
            root,
            self.backbone(),
            frames_per_snippet=self.spec.frames_per_snippet,
            sampled_frames_per_snippet=self.spec.frames_per_snippet,
            category_names=list(self.spec.category_names),
        )
        frames: dict[str, list[int]] = {}
        categories: dict[str, str] = {}
        for video in self.videos(num_normal, num_anomalous, seed, prefix):
            num_frames = video.features.shape[0] * self.spec.frames_per_snippet
            entry = VideoEntry(
                name=video.name,
                label=int(video.category is not None),
                category=video.category,
                num_frames=num_frames,
                fps=30.0,
                num_snippets=video.features.shape[0],
                source="synthetic",
            )
            store.add(entry, video.features)
            frames[video.name] = np.repeat(video.snippet_labels, self.spec.frames_per_snippet).tolist()
            if video.category is not None:
                categories[video.name] = video.category
        return store, FrameLabels(frames=frames, categories=categories)
