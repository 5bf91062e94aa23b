from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from model.video.snippets import (
    SnippetSpec,
    frames_to_snippets,
    iter_snippet_batches,
    sample_indices,
    snippet_count,
)
from model.video.source import open_source
from tests.footage import encode_ped2_clip


def _numbered_frames(folder: Path, n: int) -> Path:
    """Frame i is filled with the value i, so snippet contents can be checked exactly."""
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((6, 8, 3), i, np.uint8))
    return folder


def test_sample_indices_are_evenly_spaced() -> None:
    assert sample_indices(SnippetSpec()).tolist() == list(range(16))
    assert sample_indices(SnippetSpec(sampled_frames_per_snippet=4)).tolist() == [2, 6, 10, 14]
    assert sample_indices(SnippetSpec(sampled_frames_per_snippet=8)).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert sample_indices(SnippetSpec(sampled_frames_per_snippet=1)).tolist() == [8]
    with pytest.raises(ValidationError):
        SnippetSpec(frames_per_snippet=8, sampled_frames_per_snippet=9)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 50, 64])
@pytest.mark.parametrize("per_batch", [1, 3])
def test_snippets_cover_frames_with_padded_tail(tmp_path: Path, n: int, per_batch: int) -> None:
    spec = SnippetSpec()
    with open_source(_numbered_frames(tmp_path / "f", n), folder_fps=8.0) as source:
        batches = list(iter_snippet_batches(source, spec, per_batch))
    t = snippet_count(n, spec)
    assert t == -(-n // 16)
    assert sum(len(b) for b in batches) == t
    assert [b.first_index for b in batches] == list(range(0, t, per_batch))
    values = np.concatenate([b.frames[:, :, 0, 0, 0] for b in batches]).astype(int)  # [T, 16]
    expected = np.minimum(np.arange(t * 16), n - 1).reshape(t, 16)
    np.testing.assert_array_equal(values, expected)
    starts = np.concatenate([b.start_frames for b in batches])
    ends = np.concatenate([b.end_frames for b in batches])
    np.testing.assert_array_equal(starts, np.arange(t) * 16)
    np.testing.assert_array_equal(ends, np.minimum(np.arange(1, t + 1) * 16, n))
    # Each snippet spans the times of its first and last frame.
    np.testing.assert_allclose(np.concatenate([b.start_times for b in batches]), starts / 8.0)
    np.testing.assert_allclose(np.concatenate([b.end_times for b in batches]), (ends - 1) / 8.0)
    assert not np.concatenate([b.degraded for b in batches]).any()


def test_subsampling_keeps_evenly_spaced_frames_and_clamps_the_tail() -> None:
    frames = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    snippets = frames_to_snippets(frames, SnippetSpec(sampled_frames_per_snippet=4))
    assert snippets.shape == (2, 4, 2, 2, 3)
    assert snippets[:, :, 0, 0, 0].tolist() == [[2, 6, 10, 14], [18, 19, 19, 19]]


def test_snippet_count_and_timing_of_real_clip(tmp_path: Path) -> None:
    video = encode_ped2_clip(tmp_path / "clip.mp4", clip="testing/frames/09", max_frames=100)
    spec = SnippetSpec(sampled_frames_per_snippet=8)
    with open_source(video) as source:
        batches = list(iter_snippet_batches(source, spec, snippets_per_batch=4))
    assert [len(b) for b in batches] == [4, 3]
    last = batches[-1]
    assert last.frames.shape == (3, 8, 240, 360, 3)
    assert last.start_frames.tolist() == [64, 80, 96]
    assert last.end_frames.tolist() == [80, 96, 100]
    assert last.start_times.tolist() == pytest.approx([6.4, 8.0, 9.6])
    assert last.end_times.tolist() == pytest.approx([7.9, 9.5, 9.9])
    assert not last.degraded.any()
