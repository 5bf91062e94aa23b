"""Feature sets for training and evaluation: one view over the project's feature store and the public releases.

Training resamples each video to T bins (mean over equal bins), draws batches with equal numbers of normal and
anomalous videos, and samples one crop per video per epoch as augmentation. Everything random comes from a
generator seeded by (seed, epoch), so an epoch's batches are the same whether training ran straight through or
was resumed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from model.backbones.identity import BackboneIdentity
from model.data.feature_store import FeatureStore
from model.data.public_release import ReleaseList

log = logging.getLogger(__name__)


def resample_to_bins(features: np.ndarray, bins: int) -> np.ndarray:
    """[T, D] -> [bins, D]: mean over `bins` equal spans of the T snippets (a span shorter than one snippet takes
    the snippet it starts in, so short videos are stretched by repetition)."""
    features = np.asarray(features, dtype=np.float32)
    length = features.shape[0]
    if length == 0:
        raise ValueError("cannot resample a video with no snippets")
    edges = np.linspace(0, length, bins + 1).astype(np.int64)
    sums = np.concatenate(
        (np.zeros((1, features.shape[1]), np.float64), np.cumsum(features, axis=0, dtype=np.float64))
    )
    counts = edges[1:] - edges[:-1]
    means = (sums[edges[1:]] - sums[edges[:-1]]) / np.maximum(counts, 1)[:, None]
    empty = counts == 0
    means[empty] = features[np.minimum(edges[:-1][empty], length - 1)]
    return means.astype(np.float32)


@dataclass(frozen=True)
class VideoRecord:
    name: str
    label: int  # 1 = the video contains an anomaly
    category: str | None
    crops: tuple[Path, ...]  # one feature file per crop (a project store has one)
    num_frames: int | None = None
    group: str | None = None  # source group (camera, recording); None = the video is its own group


@dataclass(frozen=True)
class FeatureSet:
    """Videos with their feature files, the category vocabulary and the backbone the features came from."""

    records: tuple[VideoRecord, ...]
    category_names: tuple[str, ...]
    feature_dim: int
    backbone: BackboneIdentity
    source: str

    @classmethod
    def from_store(cls, store: FeatureStore, category_names: Sequence[str] | None = None) -> FeatureSet:
        records = tuple(
            VideoRecord(v.name, v.label, v.category, (store.feature_path(v.name),), v.num_frames, v.group)
            for v in store
        )
        names = tuple(category_names or store.manifest.category_names)
        return cls(records, names, store.backbone.dim, store.backbone, str(store.root))

    @classmethod
    def from_stores(cls, stores: Sequence[FeatureStore]) -> FeatureSet:
        """Several stores as one set (e.g. datasets extracted apart): the same backbone and snippet geometry,
        distinct video names; categories are the sorted union. Raises ValueError naming the store at fault."""
        if not stores:
            raise ValueError("no feature store given")
        if len(stores) == 1:
            return cls.from_store(stores[0])
        first = stores[0]
        geometry = (first.manifest.frames_per_snippet, first.manifest.sampled_frames_per_snippet)
        owner: dict[str, Path] = {}
        for store in stores[1:]:
            problem = first.backbone.mismatch(store.backbone)
            if problem:
                raise ValueError(f"{store.root} holds other features than {first.root}: {problem}")
            other = (store.manifest.frames_per_snippet, store.manifest.sampled_frames_per_snippet)
            if other != geometry:
                raise ValueError(
                    f"{store.root} cuts snippets of {other[0]} frames ({other[1]} sampled), {first.root} of "
                    f"{geometry[0]} ({geometry[1]})"
                )
        for store in stores:
            for video in store:
                if video.name in owner:
                    raise ValueError(f"video {video.name!r} is in both {owner[video.name]} and {store.root}")
                owner[video.name] = store.root
        sets = [cls.from_store(store) for store in stores]
        categories = tuple(sorted({c for s in sets for c in s.category_names}))
        records = tuple(r for s in sets for r in s.records)
        return cls(records, categories, first.backbone.dim, first.backbone, "; ".join(s.source for s in sets))

    @classmethod
    def from_release(
        cls, release: ReleaseList, backbone: BackboneIdentity | None = None, source: str = "public release"
    ) -> FeatureSet:
        records = tuple(VideoRecord(v.name, v.label, v.category, v.crops) for v in release.videos)
        if not records:
            raise ValueError("the feature list selects no video")
        dim = int(np.load(records[0].crops[0], mmap_mode="r").shape[1])
        if backbone is None:
            # The public releases are CLIP ViT-B/16 (OpenAI weights) image features.
            backbone = BackboneIdentity(name="open_clip", architecture="ViT-B-16", weights="openai", dim=dim)
        if backbone.dim != dim:
            raise ValueError(
                f"features are {dim}-dim but the stated backbone {backbone.key()} gives {backbone.dim}"
            )
        return cls(records, tuple(release.category_names), dim, backbone, source)

    def __len__(self) -> int:
        return len(self.records)

    def groups(self) -> dict[str, str]:
        """Video name -> source group, in record order, for grouped cross-validation (a video without a
        group is its own group)."""
        return {r.name: r.group or r.name for r in self.records}

    def subset(self, names: Sequence[str]) -> FeatureSet:
        by_name = {r.name: r for r in self.records}
        return replace(self, records=tuple(by_name[n] for n in names))

    def category_index(self, record: VideoRecord) -> int:
        """Index in category_names, -1 for normal videos (the model's convention)."""
        if not record.label:
            return -1
        if record.category not in self.category_names:
            raise ValueError(
                f"{record.name}: category {record.category!r} is not among {list(self.category_names)}"
            )
        return self.category_names.index(record.category)

    def load(self, record: VideoRecord, crop: int = 0) -> np.ndarray:
        features = np.load(record.crops[crop])
        if features.ndim != 2 or features.shape[1] != self.feature_dim or features.shape[0] == 0:
            raise ValueError(
                f"{record.crops[crop]}: shape {features.shape}, expected [snippets>0, {self.feature_dim}]"
            )
        return features.astype(np.float32, copy=False)


def split_train_validation(
    records: Sequence[VideoRecord], fraction: float, seed: int
) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Hold out `fraction` of the training videos, stratified by category (normal videos are one stratum), with
    at least one normal and one anomalous video on each side when the set allows it."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 7919])
    strata: dict[str | None, list[int]] = {}
    for i, r in enumerate(records):
        strata.setdefault(r.category if r.label else None, []).append(i)
    held: list[int] = []
    for key in sorted(strata, key=lambda k: "" if k is None else k):
        members = np.asarray(strata[key])
        count = round(fraction * members.size)
        held.extend(rng.permutation(members)[:count].tolist())
    held_set = set(held)
    for label in (0, 1):  # make sure both sides can rank normal against anomalous
        group = [i for i, r in enumerate(records) if r.label == label]
        if len(group) >= 2 and not held_set.intersection(group):
            held_set.add(int(rng.choice(group)))
        if len(group) >= 2 and held_set.issuperset(group):
            held_set.discard(group[0])
    train = [r for i, r in enumerate(records) if i not in held_set]
    val = [r for i, r in enumerate(records) if i in held_set]
    return train, val


@dataclass(frozen=True)
class Batch:
    features: torch.Tensor  # [B, T, D] float32
    labels: torch.Tensor  # [B] float32, 1 = anomalous
    categories: torch.Tensor  # [B] long, -1 = normal
    names: tuple[str, ...]
    # [B, T] bool: snippets known to be normal inside an anomalous video (the normal part of a spliced one)
    known_normal: torch.Tensor | None = None


def splice(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two videos' snippet features [T1, D] and [T2, D] as one video [T1 + T2, D] (a cut from one camera view
    to the other, or one clip following the other in time)."""
    return np.concatenate([np.asarray(first, np.float32), np.asarray(second, np.float32)])


class BalancedBatches:
    """Epochs of batches holding `batch_size // 2` normal and `batch_size // 2` anomalous videos.

    An epoch walks through the larger group once in random order; the smaller group is cycled (reshuffled each
    pass). Each video contributes one crop, drawn at random when `sample_crops` (else crop 0), resampled to
    `num_segments` bins. Resampled arrays are cached in memory up to `cache_bytes`.

    Splicing (`splice_prob` > 0): each anomalous video of a batch is, with that probability, spliced in time
    with a random normal training video (a quarter to a half of the `num_segments` bins, before or after it, the
    anomalous video resampled to the rest). Its label stays anomalous (it still holds the anomaly) and
    `Batch.known_normal` marks the normal part, which is normal whatever it is spliced to: only video-level
    labels are used. A temporal model that spreads a clip-level "anomalous" signal over its context is then
    penalised on those snippets (see `model.losses.known_normal_loss`).
    """

    def __init__(
        self,
        features: FeatureSet,
        records: Sequence[VideoRecord],
        num_segments: int,
        batch_size: int,
        seed: int,
        sample_crops: bool = True,
        cache_bytes: int = 1 << 30,
        splice_prob: float = 0.0,
    ) -> None:
        if not 0.0 <= splice_prob <= 1.0:
            raise ValueError(f"splice_prob must be within [0, 1], got {splice_prob}")
        if splice_prob > 0 and num_segments < 4:
            raise ValueError("splicing needs at least 4 segments per training video")
        self.splice_prob = splice_prob
        self.features = features
        self.normal = [r for r in records if not r.label]
        self.anomalous = [r for r in records if r.label]
        if not self.normal or not self.anomalous:
            raise ValueError(
                f"training needs normal and anomalous videos (got {len(self.normal)} normal, "
                f"{len(self.anomalous)} anomalous)"
            )
        if batch_size < 2:
            raise ValueError("batch_size must be at least 2 (one normal and one anomalous video)")
        self.half = batch_size // 2
        self.num_segments = num_segments
        self.seed = seed
        self.sample_crops = sample_crops
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._cache_budget = cache_bytes

    def __len__(self) -> int:
        return max(1, -(-max(len(self.normal), len(self.anomalous)) // self.half))

    def _order(self, rng: np.random.Generator, count: int, needed: int) -> np.ndarray:
        passes = -(-needed // count)
        return np.concatenate([rng.permutation(count) for _ in range(passes)])[:needed]

    def _resampled(self, record: VideoRecord, crop: int, bins: int | None = None) -> np.ndarray:
        bins = bins or self.num_segments
        key = (record.name, crop, bins)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        array = resample_to_bins(self.features.load(record, crop), bins)
        if self._cache_budget >= array.nbytes:
            self._cache[key] = array
            self._cache_budget -= array.nbytes
        return array

    def _crop(self, rng: np.random.Generator, record: VideoRecord) -> int:
        return int(rng.integers(len(record.crops))) if self.sample_crops else 0

    def _spliced(self, rng: np.random.Generator, record: VideoRecord) -> tuple[np.ndarray, np.ndarray]:
        """An anomalous video spliced with a random normal one: features [T, D] and the known-normal mask [T]."""
        normal = self.normal[int(rng.integers(len(self.normal)))]
        t = self.num_segments
        length = int(rng.integers(max(1, t // 4), t // 2 + 1))
        normal_part = self._resampled(normal, self._crop(rng, normal), length)
        anomalous_part = self._resampled(record, self._crop(rng, record), t - length)
        mask = np.zeros(t, dtype=bool)
        if rng.random() < 0.5:
            mask[:length] = True
            return splice(normal_part, anomalous_part), mask
        mask[t - length :] = True
        return splice(anomalous_part, normal_part), mask

    def epoch(self, epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, epoch])
        needed = len(self) * self.half
        normal_order = self._order(rng, len(self.normal), needed)
        anomalous_order = self._order(rng, len(self.anomalous), needed)
        for b in range(len(self)):
            chosen = [self.normal[i] for i in normal_order[b * self.half : (b + 1) * self.half]]
            chosen += [self.anomalous[i] for i in anomalous_order[b * self.half : (b + 1) * self.half]]
            crops = [self._crop(rng, r) for r in chosen]
            # Draws in this order (crops, then splices of the anomalous half) keep runs reproducible.
            spliced = {
                i: self._spliced(rng, chosen[i])
                for i in range(self.half, len(chosen))
                if self.splice_prob > 0 and rng.random() < self.splice_prob
            }
            arrays = np.stack(
                [
                    spliced[i][0] if i in spliced else self._resampled(r, crops[i])
                    for i, r in enumerate(chosen)
                ]
            )
            known_normal = None
            if self.splice_prob > 0:
                known_normal = np.zeros(arrays.shape[:2], dtype=bool)
                for i, (_, mask) in spliced.items():
                    known_normal[i] = mask
            yield Batch(
                torch.from_numpy(arrays),
                torch.tensor([float(r.label) for r in chosen]),
                torch.tensor([self.features.category_index(r) for r in chosen], dtype=torch.long),
                tuple(r.name for r in chosen),
                None if known_normal is None else torch.from_numpy(known_normal),
            )
