"""SceneDescriptor: shapes, determinism, and speed features that follow what moves where."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.scene import SceneDescriptor
from model.scene.descriptor import (
    DIM,
    GRID,
    ORIENTATION_BINS,
    REGIONS,
    SPEED_DIM,
    WORK_SIZE,
    _region_histograms,
    _region_means,
    _regions,
)


def moving_square(speed_px: float, frames: int = 16, size: tuple[int, int] = (360, 240)) -> np.ndarray:
    """`[1, F, H, W, 3]`: a textured grey background with a bright 24 px square moving right by `speed_px` px per
    frame (at `size`), starting at the view's left third, vertically centred."""
    w, h = size
    rng = np.random.default_rng(7)
    background = rng.integers(60, 120, (h, w), dtype=np.uint8)
    out = np.repeat(background[None], frames, axis=0).copy()
    pattern = rng.integers(180, 255, (24, 24), dtype=np.uint8)
    for f in range(frames):
        x = round(w / 3 + f * speed_px)
        out[f, h // 2 - 12 : h // 2 + 12, x : x + 24] = pattern
    return np.repeat(out[None, ..., None], 3, axis=-1)


def region_of(x_frac: float, y_frac: float) -> int:
    cols, rows = GRID
    return int(y_frac * rows) * cols + int(x_frac * cols)


def test_shapes_and_empty_input() -> None:
    d = SceneDescriptor()
    rng = np.random.default_rng(0)
    out = d.describe(rng.integers(0, 256, (3, 16, 90, 130, 3), dtype=np.uint8))
    assert out.shape == (3, REGIONS, DIM) and out.dtype == np.float32
    assert (d.regions, d.dim, d.positions.shape) == (REGIONS, DIM, (REGIONS, 2))
    assert np.isfinite(out).all()
    assert d.describe(np.zeros((0, 16, 90, 130, 3), np.uint8)).shape == (0, REGIONS, DIM)


def test_short_snippets_have_descriptors() -> None:
    d = SceneDescriptor()
    one = d.describe(moving_square(4.0, frames=1))
    assert one.shape == (1, REGIONS, DIM)
    assert not one[..., :SPEED_DIM].any()  # one frame: no motion
    two = d.describe(moving_square(4.0, frames=2))
    assert two.shape == (1, REGIONS, DIM) and np.isfinite(two).all()


def test_deterministic_and_independent_of_batch() -> None:
    d = SceneDescriptor()
    frames = np.concatenate([moving_square(2.0), moving_square(6.0)])
    a, b = d.describe(frames), SceneDescriptor().describe(frames)
    # OpenCV's flow and resize differ in the last float32 bit between calls (1 in ~1000 values, seen with one
    # thread too), so equal up to rounding.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a[1:], d.describe(frames[1:]), rtol=0, atol=1e-6)


def test_fast_square_raises_its_regions_speed_features() -> None:
    d = SceneDescriptor()
    slow, fast = d.describe(moving_square(1.0))[0], d.describe(moving_square(6.0))[0]
    # The square's path: from x = 1/3 of the view rightwards along the middle row.
    path = [region_of(x, 0.5) for x in (0.4, 0.5)]
    assert (fast[path, :SPEED_DIM].max(axis=0) > slow[path, :SPEED_DIM].max(axis=0)).sum() >= 5
    # The 99th percentile of speed where the square went, against a still corner.
    q99 = 2
    assert fast[path, q99].max() > 1.5 * slow[path, q99].max()
    corner = region_of(0.02, 0.02)
    assert fast[corner, :SPEED_DIM].max() < 0.3


def test_bad_input_is_refused() -> None:
    d = SceneDescriptor()
    with pytest.raises(ValueError, match="uint8"):
        d.describe(np.zeros((1, 16, 90, 130, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[S, F, H, W, 3\]"):
        d.describe(np.zeros((16, 90, 130, 3), np.uint8))
    with pytest.raises(ValueError, match="grey"):
        d.describe_grey(np.zeros((1, 16, 120, 160), np.uint8))
    assert d.describe_grey(np.zeros((1, 4, WORK_SIZE[1], WORK_SIZE[0]), np.uint8)).shape == (1, REGIONS, DIM)


def test_region_statistics_equal_their_per_region_definition() -> None:
    rng = np.random.default_rng(3)
    bins = rng.integers(0, 8, (2, 3, WORK_SIZE[1], WORK_SIZE[0]))
    weights = rng.random((2, 3, WORK_SIZE[1], WORK_SIZE[0]), dtype=np.float32)
    by_region, w = _regions(bins), _regions(weights)  # [2, 3, R, pixels]
    expected = np.stack([(w * (by_region == b)).mean(axis=-1) for b in range(8)], axis=-1)
    np.testing.assert_allclose(_region_histograms(bins, weights, 8), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_region_means(weights), w.mean(axis=-1), rtol=1e-5)


def test_orientation_bins_at_exact_edges_match_the_modulo_definition() -> None:
    # Integer gradients put many pixels exactly on bin edges (0, 45, 90 degrees ...): the fast unsigned fold must
    # bin them as np.mod(angle, pi) does.
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 4, (1, 4, WORK_SIZE[1], WORK_SIZE[0]), dtype=np.uint8) * 60
    g = grey.astype(np.float32)
    gx, gy = np.zeros_like(g), np.zeros_like(g)
    gx[..., :, 1:-1] = g[..., :, 2:] - g[..., :, :-2]
    gy[..., 1:-1, :] = g[..., 2:, :] - g[..., :-2, :]
    w = g.shape[-1]
    magnitude, angle = cv2.cartToPolar(gx.reshape(-1, w), gy.reshape(-1, w))
    angle = angle.reshape(g.shape)
    bins = np.minimum(
        (np.mod(angle, np.pi) * (ORIENTATION_BINS / np.pi)).astype(np.int64), ORIENTATION_BINS - 1
    )
    hist = _region_histograms(bins, magnitude.reshape(g.shape) / 255.0, ORIENTATION_BINS)
    expected = np.sqrt(hist.mean(axis=1))
    appearance = SceneDescriptor._appearance(grey)
    np.testing.assert_allclose(appearance, expected, rtol=1e-6, atol=1e-7)
