from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from model.backbones.motion import CELLS, DIM, DIRECTION_BINS, LAYOUT, SPEED_BINS, MotionBackbone
from model.video.snippets import SnippetSpec, iter_snippet_batches
from model.video.source import open_source
from tests.footage import PED2_ROOT

H, W = 240, 360


def _blob_snippet(step_x: float, frames: int = 16, seed: int = 0) -> np.ndarray:
    """A textured still background with a bright disc moving `step_x` pixels per frame (0 = still)."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(60, 120, (H, W), dtype=np.uint8), (5, 5), 0)
    out = np.empty((frames, H, W, 3), np.uint8)
    for i in range(frames):
        frame = background.copy()
        cv2.circle(frame, (int(120 + step_x * i), 120), 25, 230, -1)
        out[i] = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return out


@pytest.fixture(scope="module")
def backbone() -> MotionBackbone:
    return MotionBackbone()


def test_identity_and_shape(backbone: MotionBackbone) -> None:
    assert backbone.dim == DIM == backbone.identity.dim
    assert 200 <= DIM <= 600
    assert backbone.identity.name == "motion" and backbone.identity.weights.startswith("motion-")
    features = backbone.encode_snippets(np.stack([_blob_snippet(0), _blob_snippet(5)]))
    assert features.shape == (2, DIM) and features.dtype == torch.float32
    assert torch.isfinite(features).all()


def test_reacts_to_motion_and_its_direction(backbone: MotionBackbone) -> None:
    still, right, left = (
        backbone.encode_snippets(_blob_snippet(step)[None]).numpy()[0] for step in (0.0, 5.0, -5.0)
    )
    for part in ("flow_direction", "change"):
        assert np.abs(still[LAYOUT[part]]).max() < 0.01
        assert right[LAYOUT[part]].max() > 0.1
    # A still scene is all in the "static" speed bin; motion moves mass out of it.
    static_share = still[LAYOUT["flow_speed"]].reshape(CELLS, SPEED_BINS)[:, 0]
    assert static_share.min() > 0.95
    assert right[LAYOUT["flow_speed"]].reshape(CELLS, SPEED_BINS)[:, 0].min() < 0.8
    # Direction histograms (summed over cells): rightward flow is near 0 degrees, leftward near 180.
    right_dirs = right[LAYOUT["flow_direction"]].reshape(CELLS, DIRECTION_BINS).sum(0)
    left_dirs = left[LAYOUT["flow_direction"]].reshape(CELLS, DIRECTION_BINS).sum(0)
    assert right_dirs.argmax() in (0, DIRECTION_BINS - 1)
    assert left_dirs.argmax() in (DIRECTION_BINS // 2 - 1, DIRECTION_BINS // 2)
    # Appearance: same picture content, nearly the same gradient statistics.
    orientation = LAYOUT["orientation"]
    assert np.abs(still[orientation] - right[orientation]).mean() < 0.1 * still[orientation].mean()


def test_deterministic_and_stateless(backbone: MotionBackbone) -> None:
    spec = SnippetSpec()
    with open_source(PED2_ROOT / "testing/frames/04") as source:
        snippets = np.concatenate([b.frames for b in iter_snippet_batches(source, spec, 4)])
    first = backbone.encode_snippets(snippets)
    again = MotionBackbone().encode_snippets(snippets)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    # One snippet alone, or in another batch, gets exactly the same vector.
    alone = backbone.encode_snippets(snippets[5:6])
    torch.testing.assert_close(alone[0], first[5], rtol=0, atol=0)
    shuffled = backbone.encode_snippets(torch.from_numpy(snippets[[7, 2, 5]]))
    torch.testing.assert_close(shuffled, first[[7, 2, 5]], rtol=0, atol=0)
    threaded = MotionBackbone(threads=3)
    try:
        torch.testing.assert_close(threaded.encode_snippets(snippets), first, rtol=0, atol=0)
    finally:
        threaded.close()
    # Ped2 test clip 04 has a cart driving through: its motion statistics vary over the clip.
    assert first[:, LAYOUT["change"]].sum(1).std() > 0


def test_single_sampled_frame_has_appearance_only(backbone: MotionBackbone) -> None:
    features = backbone.encode_snippets(_blob_snippet(5.0, frames=1)[None]).numpy()[0]
    assert not features[: LAYOUT["orientation"].start].any()
    assert features[LAYOUT["orientation"]].any()


def test_rejects_wrong_layout(backbone: MotionBackbone) -> None:
    with pytest.raises(ValueError, match="uint8"):
        backbone.encode_snippets(np.zeros((1, 16, 24, 36, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        backbone.encode_snippets(np.zeros((16, 24, 36, 3), np.uint8))


def test_runs_over_200_frames_per_second_on_one_core(backbone: MotionBackbone) -> None:
    with open_source(PED2_ROOT / "testing/frames/02") as source:
        frames = source.read_batch(128).reshape(8, 16, H, W, 3)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        backbone.encode_snippets(frames[:1])
        best = min(_timed(lambda: backbone.encode_snippets(frames)) for _ in range(3))
    finally:
        cv2.setNumThreads(threads)
    assert 128 / best >= 200, f"{128 / best:.0f} frames/s"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
