"""Frame-level ground truth for the benchmarks' evaluation protocol.

Protocol (UCF-Crime style, also used for any project feature set):

* A test video with ``T_i`` snippet scores covers frames ``[0, L_i)`` with ``L_i = min(16 * T_i, N_i)``, where
  ``N_i`` is the frame count given by the annotation (when the annotation has one). Frame scores are the snippet
  scores repeated 16 times and cut to ``L_i``.
* A frame is anomalous if it lies in an annotated interval ``[start, end)``, clipped to ``[0, L_i)``.
* Videos are concatenated in the annotation file's order.

Why ``min(16 * T_i, N_i)``: feature releases differ by a snippet in their lengths, so the ground truth must be built
at one's own snippet count (never longer than the scored snippets), while snippets that pad past the last real frame
must not invent frames the video does not have. With ``T_i = ceil(N_i / 16)`` (snippets padded to cover the last
frames) every video contributes exactly its ``N_i`` frames, which for the UCF-Crime test annotation adds up to the
standard 1,111,808-frame ground-truth vector.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

NORMAL = "Normal"


@dataclass(frozen=True)
class VideoTruth:
    """One test video's annotation: its category (``Normal`` for normal videos) and anomalous frame intervals."""

    name: str
    category: str
    intervals: tuple[tuple[int, int], ...] = ()
    num_frames: int | None = None

    @property
    def is_anomalous(self) -> bool:
        return self.category != NORMAL

    def length(self, num_snippets: int, snippet_frames: int = 16) -> int:
        """L_i: frames covered by ``num_snippets`` scored snippets, cut to the annotated frame count."""
        covered = num_snippets * snippet_frames
        return covered if self.num_frames is None else min(covered, self.num_frames)

    def reference_snippets(self, snippet_frames: int = 16) -> int:
        """Snippet count that covers every annotated frame: ceil(N_i / 16) (the last snippet padded)."""
        if self.num_frames is None:
            raise ValueError(f"{self.name}: the annotation has no frame count")
        return math.ceil(self.num_frames / snippet_frames)

    def clipped_intervals(self, length: int) -> list[tuple[int, int]]:
        out = []
        for start, end in self.intervals:
            s, e = max(start, 0), min(end, length)
            if e > s:
                out.append((s, e))
        return out

    def frame_labels(self, length: int) -> np.ndarray:
        labels = np.zeros(length, dtype=np.uint8)
        for s, e in self.clipped_intervals(length):
            labels[s:e] = 1
        return labels


def video_name(path_or_name: str) -> str:
    """`Arson/Arson022_x264.mp4` -> `Arson022_x264` (the key used for score files)."""
    base = path_or_name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    return stem if dot and ext.lower() in {"mp4", "avi", "mkv", "mov", "webm", "npy"} else base


def _intervals(values: Sequence[int]) -> tuple[tuple[int, int], ...]:
    if len(values) % 2:
        raise ValueError(f"interval bounds come in pairs, got {len(values)} numbers")
    return tuple((s, e) for s, e in zip(values[::2], values[1::2], strict=True) if s >= 0 and e > s)


def parse_annotation_line(line: str) -> VideoTruth:
    """Parse one line of either annotation format.

    * ``test_annotations.txt``: ``Category/Video_x264.mp4 total_frames Category s1 e1 s2 e2`` (-1 = no interval)
    * ``Temporal_Anomaly_Annotation.txt``: ``Video_x264 Category s1 e1 s2 e2`` (no frame count)
    """
    tokens = line.split()
    if len(tokens) < 2:
        raise ValueError(f"annotation line too short: {line!r}")
    name = video_name(tokens[0])
    if tokens[1].lstrip("-").isdigit():
        if len(tokens) < 3:
            raise ValueError(f"annotation line lacks a category: {line!r}")
        num_frames: int | None = int(tokens[1])
        category, rest = tokens[2], tokens[3:]
    else:
        num_frames, category, rest = None, tokens[1], tokens[2:]
    return VideoTruth(name, category, _intervals([int(t) for t in rest]), num_frames)


def read_annotations(path: str | os.PathLike[str]) -> list[VideoTruth]:
    """All videos of an annotation file, in the file's order (the order frames are concatenated in)."""
    truth = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            truth.append(parse_annotation_line(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    names = [t.name for t in truth]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate video names")
    return truth


def read_xd_annotations(path: str | os.PathLike[str], video_names: Sequence[str]) -> list[VideoTruth]:
    """XD-Violence test annotations: one line `<video> s1 e1 [s2 e2 ...]` per anomalous video (frame indices).

    Every video of `video_names` (the test list, in its order) not in the file is normal. The category is the
    primary code of the name's `_label_<codes>` part (`..._label_B2-G-0` -> Shooting). The file has no frame
    counts, so each video's ground truth spans its 16 * T_i snippet frames.
    """
    from model.data.public_release import parse_xd_label  # the XD label codes live with the release reader

    annotated: dict[str, tuple[tuple[int, int], ...]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            annotated[video_name(tokens[0])] = _intervals([int(t) for t in tokens[1:]])
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    truth = []
    for name in video_names:
        parsed = parse_xd_label(name.rsplit("_label_", 1)[1]) if "_label_" in name else None
        if name in annotated:
            category = parsed.category if parsed and parsed.category else "Anomaly"
        elif parsed and parsed.label:
            raise ValueError(f"{name} is labelled anomalous but has no interval in {path}")
        else:
            category = NORMAL
        truth.append(VideoTruth(name, category, annotated.get(name, ()), None))
    unknown = set(annotated) - set(video_names)
    if unknown:
        raise ValueError(
            f"{len(unknown)} annotated videos of {path} are not in the test set: {sorted(unknown)[:3]}"
        )
    return truth


def runs_of_ones(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) intervals of consecutive 1s."""
    padded = np.concatenate(([0], np.asarray(labels, dtype=np.int8) != 0, [0])).astype(np.int8)
    edges = np.diff(padded)
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


class FrameLabels(BaseModel):
    """Per-frame 0/1 labels per test video (e.g. UCSD Ped2), an alternative to an interval annotation file.

    ``frames`` maps video name -> one label per frame (index = frame number). ``categories`` names the anomaly
    category of anomalous videos (those with at least one anomalous frame); missing ones get
    ``default_category``. Videos are evaluated in ``frames``' order.
    """

    frames: dict[str, list[int]]
    categories: dict[str, str] = Field(default_factory=dict)
    default_category: str = "Anomaly"

    @classmethod
    def load(cls, path: str | os.PathLike[str], categories: Mapping[str, str] | None = None) -> FrameLabels:
        """Read ``{"frames": {video: [0, 1, ...]}, ...}`` or a plain ``{video: [0, 1, ...]}`` JSON file."""
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and isinstance(data.get("frames"), dict):
            frames = data["frames"]
            cats = dict(data.get("categories") or {})
        else:
            frames, cats = data, {}
        cats.update(categories or {})
        return cls(frames=frames, categories=cats)

    def to_truth(self) -> list[VideoTruth]:
        truth = []
        for name, labels in self.frames.items():
            intervals = tuple(runs_of_ones(np.asarray(labels)))
            category = self.categories.get(name, self.default_category) if intervals else NORMAL
            truth.append(VideoTruth(name, category, intervals, len(labels)))
        return truth


@dataclass(frozen=True)
class FrameGroundTruth:
    """Concatenated frame labels of a test set, with each video's slice [offsets[i], offsets[i+1])."""

    videos: tuple[VideoTruth, ...]
    labels: np.ndarray  # uint8 [sum L_i]
    offsets: np.ndarray  # int64 [num_videos + 1]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def anomalous_video_mask(self) -> np.ndarray:
        return np.array([v.is_anomalous for v in self.videos], dtype=bool)

    def frame_mask(self, video_mask: np.ndarray) -> np.ndarray:
        """Frames that belong to the selected videos."""
        return np.repeat(video_mask, self.lengths)


def build_ground_truth(
    truth: Iterable[VideoTruth], snippet_counts: Mapping[str, int] | None = None, snippet_frames: int = 16
) -> FrameGroundTruth:
    """Concatenate frame labels in annotation order.

    ``snippet_counts`` gives each video's own number of scored snippets T_i; without it every video uses its
    reference count ceil(N_i / 16).
    """
    videos = tuple(truth)
    lengths = np.empty(len(videos), dtype=np.int64)
    for i, video in enumerate(videos):
        count = (
            video.reference_snippets(snippet_frames) if snippet_counts is None else snippet_counts[video.name]
        )
        lengths[i] = video.length(count, snippet_frames)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    labels = np.zeros(int(offsets[-1]), dtype=np.uint8)
    for video, start, length in zip(videos, offsets[:-1], lengths, strict=True):
        for s, e in video.clipped_intervals(int(length)):
            labels[start + s : start + e] = 1
    return FrameGroundTruth(videos, labels, offsets)
