"""Offline feature extraction: videos -> snippet features in a FeatureStore (resumable, skipping bad inputs)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field
from tqdm import tqdm

from model.backbones.base import Backbone
from model.data.feature_store import FeatureStore, VideoEntry, safe_video_name
from model.video.snippets import SnippetSpec, iter_snippet_batches
from model.video.source import DEFAULT_FOLDER_FPS, VideoDecodeError, VideoSource, open_source

log = logging.getLogger(__name__)


class VideoInput(BaseModel):
    name: str
    uri: str
    label: int = Field(default=0, ge=0, le=1)
    category: str | None = None
    group: str | None = Field(default=None, description="source group (camera, recording); None = the video")
    licence: str | None = None
    dataset: str | None = Field(default=None, description="the manifest the video came from")
    folder_fps: float | None = Field(
        default=None, gt=0, description="frame rate if a frame folder (frames/s)"
    )


class ExtractionReport(BaseModel):
    extracted: list[str] = Field(default_factory=list)
    already_present: list[str] = Field(default_factory=list, description="skipped: in the store already")
    failed: dict[str, str] = Field(default_factory=dict, description="video name -> why it was skipped")
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"extracted {len(self.extracted)} videos ({self.frames} frames, {self.frames_per_second:.1f} "
            f"frames/s), {len(self.already_present)} already present, {len(self.failed)} failed"
        ]
        lines += [f"  FAILED {name}: {reason}" for name, reason in self.failed.items()]
        return "\n".join(lines)


def _as_inputs(sources: Iterable[VideoInput | Sequence]) -> list[VideoInput]:
    inputs = [
        s if isinstance(s, VideoInput) else VideoInput(**dict(zip(VideoInput.model_fields, s, strict=False)))
        for s in sources
    ]
    seen: set[str] = set()
    for item in inputs:
        safe_video_name(item.name)
        if item.name in seen:
            raise ValueError(f"video name {item.name!r} appears twice in the extraction list")
        seen.add(item.name)
    return inputs


def encode_source(
    source: VideoSource,
    backbone: Backbone,
    spec: SnippetSpec,
    snippets_per_batch: int = 8,
    captions: Sequence[str] | None = None,
) -> tuple[np.ndarray, int]:
    """All snippet features [T, D] float32 of one source and its decoded frame count.

    With a text branch, `captions` holds one caption per snippet; a short list repeats its last caption.
    """
    chunks: list[torch.Tensor] = []
    frames = 0
    for batch in iter_snippet_batches(source, spec, snippets_per_batch):
        batch_captions = None
        if captions is not None:
            last = len(captions) - 1
            batch_captions = [captions[min(batch.first_index + i, last)] for i in range(len(batch))]
        chunks.append(backbone.encode_snippets(batch.frames, batch_captions).float().cpu())
        frames = int(batch.end_frames[-1])
    if not chunks:
        return np.zeros((0, backbone.dim), np.float32), 0
    return torch.cat(chunks).numpy(), frames


def extract_to_store(
    sources: Iterable[VideoInput | Sequence],
    store_root: str | os.PathLike[str],
    backbone: Backbone,
    spec: SnippetSpec | None = None,
    *,
    snippets_per_batch: int = 8,
    folder_fps: float = DEFAULT_FOLDER_FPS,
    category_names: list[str] | None = None,
    progress: bool = True,
) -> ExtractionReport:
    """Extract every source (name, uri, label, category, ...: a `VideoInput` or a tuple of its fields in order)
    into the FeatureStore at `store_root`. Frame folders play at their input's `folder_fps`, else `folder_fps`.

    Videos already in the store are skipped (resume after an interruption); unreadable videos are skipped
    and reported with their reason. Other errors (e.g. out of device memory) propagate.
    """
    spec = spec or SnippetSpec()
    inputs = _as_inputs(sources)
    store = FeatureStore.create_or_open(
        store_root,
        backbone.identity,
        frames_per_snippet=spec.frames_per_snippet,
        sampled_frames_per_snippet=spec.sampled_frames_per_snippet,
        category_names=category_names,
    )
    report = ExtractionReport()
    started = time.perf_counter()
    bar = tqdm(inputs, desc=f"extract {Path(store_root).name}", unit="video", disable=not progress)
    for item in bar:
        if item.name in store:
            report.already_present.append(item.name)
            continue
        bar.set_postfix_str(item.name)
        try:
            captions = None
            if backbone.text_branch:
                captions = backbone.captions_for(item.name)
            with open_source(item.uri, folder_fps=item.folder_fps or folder_fps) as source:
                features, frames = encode_source(source, backbone, spec, snippets_per_batch, captions)
                fps = source.fps
        except (VideoDecodeError, KeyError) as exc:
            reason = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            report.failed[item.name] = reason
            log.warning("skipping %s: %s", item.name, reason)
            continue
        entry = VideoEntry(
            name=item.name,
            label=item.label,
            category=item.category,
            num_frames=frames,
            fps=fps,
            num_snippets=len(features),
            source=item.uri,
            group=item.group,
            licence=item.licence,
            dataset=item.dataset,
        )
        store.add(entry, features)
        report.extracted.append(item.name)
        report.frames += frames
        report.seconds = time.perf_counter() - started
        bar.set_postfix(fps=f"{report.frames_per_second:.0f}")
    bar.close()
    report.seconds = time.perf_counter() - started
    return report
