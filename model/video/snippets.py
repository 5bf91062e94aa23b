"""Cutting a frame source into fixed-length snippets, the model's time step.

A snippet is `frames_per_snippet` (16) consecutive decoded frames; snippet i covers frames [16 i, 16 i + 16).
Its `start_s` and `end_s` are the media times of its first and last frame, taken from the frames' own timestamps
(see `model.video.media_clock`), so variable-frame-rate video is placed where it was filmed. A snippet is
`degraded` when any of its frames was damaged or follows lost frames. Within a snippet
`sampled_frames_per_snippet` frames are kept, evenly spaced (the centre of each of that many equal bins),
to trade accuracy for speed.

Trailing partial snippet: when the frame count N is not a multiple of 16, the last snippet holds the
remaining N mod 16 >= 1 frames and is padded to 16 by repeating its last frame. A video therefore has
T = ceil(N / 16) snippets, and the evaluation ground truth (snippet scores repeated 16x to frames, labels
over [0, 16 T)) has the same length. `end_frames` reports the real (unpadded) end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.video.decode_report import FrameBatch
from model.video.source import VideoSource


class SnippetSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    frames_per_snippet: int = Field(default=16, ge=1, description="consecutive source frames per snippet")
    sampled_frames_per_snippet: int = Field(
        default=16, ge=1, description="frames kept per snippet, evenly spaced; fewer is faster"
    )

    @model_validator(mode="after")
    def _sampled_within_snippet(self) -> SnippetSpec:
        if self.sampled_frames_per_snippet > self.frames_per_snippet:
            raise ValueError(
                f"sampled_frames_per_snippet ({self.sampled_frames_per_snippet}) cannot exceed "
                f"frames_per_snippet ({self.frames_per_snippet})"
            )
        return self


def sample_indices(spec: SnippetSpec) -> np.ndarray:
    """Offsets inside a snippet of the frames that are kept: the centre of each of `sampled` equal bins."""
    f, s = spec.frames_per_snippet, spec.sampled_frames_per_snippet
    return ((2 * np.arange(s) + 1) * f // (2 * s)).astype(np.int64)


def snippet_count(num_frames: int, spec: SnippetSpec) -> int:
    """T = ceil(N / frames_per_snippet): a trailing partial snippet with at least one frame counts."""
    return -(-num_frames // spec.frames_per_snippet)


@dataclass(frozen=True, slots=True)
class SnippetBatch:
    """Consecutive snippets of one source; `frames[s]` holds the sampled frames of snippet first_index + s."""

    first_index: int
    frames: np.ndarray  # [S, F_sampled, H, W, 3] uint8 RGB
    start_frames: np.ndarray  # [S] int64, first source frame of each snippet
    end_frames: np.ndarray  # [S] int64, one past the last real (unpadded) source frame
    start_times: np.ndarray  # [S] float64 seconds, media time of each snippet's first frame
    end_times: np.ndarray  # [S] float64 seconds, media time of each snippet's last real frame
    degraded: np.ndarray  # [S] bool, a frame of the snippet was damaged or lost

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def _read_exactly(source: VideoSource, n: int) -> FrameBatch:
    """Up to n frames; fewer only at the end of the source (a source may return short batches before that)."""
    first = source.read_frames(n)
    if len(first) in (0, n):
        return first
    parts = [first]
    have = len(first)
    while have < n:
        more = source.read_frames(n - have)
        if len(more) == 0:
            break
        parts.append(more)
        have += len(more)
    return FrameBatch.concat(parts)


def frames_to_snippets(frames: np.ndarray, spec: SnippetSpec) -> np.ndarray:
    """[N, H, W, 3] consecutive frames -> [ceil(N/F), F_sampled, H, W, 3], the tail padded as documented."""
    f = spec.frames_per_snippet
    n = len(frames)
    t = snippet_count(n, spec)
    idx = sample_indices(spec)
    if n == t * f:
        grouped = frames.reshape(t, f, *frames.shape[1:])
        # All frames kept: a view, no copy.
        return grouped if len(idx) == f else grouped[:, idx]
    # Padding the partial snippet with its last frame == clamping the sampled offsets to the last real frame.
    positions = np.minimum(np.arange(t)[:, None] * f + idx[None, :], n - 1)
    return frames[positions]


def iter_snippet_batches(
    source: VideoSource, spec: SnippetSpec, snippets_per_batch: int = 8
) -> Iterator[SnippetBatch]:
    """Read the whole source, yielding its snippets `snippets_per_batch` at a time (the last may be fewer)."""
    if snippets_per_batch < 1:
        raise ValueError("snippets_per_batch must be >= 1")
    f = spec.frames_per_snippet
    first_index = 0
    while True:
        decoded = _read_exactly(source, snippets_per_batch * f)
        n = len(decoded)
        if n == 0:
            return
        snippets = frames_to_snippets(decoded.frames, spec)
        s = len(snippets)
        local_starts = np.arange(s, dtype=np.int64) * f
        local_ends = np.minimum(local_starts + f, n)
        yield SnippetBatch(
            first_index,
            snippets,
            first_index * f + local_starts,
            first_index * f + local_ends,
            decoded.times_s[local_starts],
            decoded.times_s[local_ends - 1],
            np.logical_or.reduceat(decoded.damaged, local_starts),
        )
        first_index += s
        if n < snippets_per_batch * f:
            return
