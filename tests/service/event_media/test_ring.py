"""The per-stream frame ring: kept rate and size, the memory budget, and lookups by media index."""

from __future__ import annotations

import numpy as np

from service.event_media.ring import FrameRing


def _batch(first: int, n: int = 16, h: int = 24, w: int = 32) -> np.ndarray:
    """Frames whose pixels all hold their media index (mod 256), to tell them apart after the ring."""
    values = (np.arange(first, first + n) % 256).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (n, h, w, 3)).copy()


def test_frames_are_kept_at_the_clip_rate_on_a_steady_grid_across_batches() -> None:
    ring = FrameRing(budget_bytes=10**8, max_fps=10, max_width=640)
    for first in range(0, 160, 16):
        ring.push(first, _batch(first), fps=30.0)
    kept = ring.since(0, limit=1000)
    assert kept is not None and kept.fps == 30.0
    # Every 3rd frame of the stream, whichever batch it fell in.
    np.testing.assert_array_equal(kept.indices, np.arange(0, 160, 3))
    np.testing.assert_array_equal(kept.frames[:, 0, 0, 0], kept.indices % 256)


def test_wide_frames_are_decimated_to_the_clip_width_with_even_sizes() -> None:
    ring = FrameRing(budget_bytes=10**9, max_fps=30, max_width=640)
    ring.push(0, np.zeros((2, 1081, 1920, 3), np.uint8), fps=25.0)
    latest = ring.latest()
    assert latest is not None and latest.shape == (360, 640, 3)
    assert latest.flags["C_CONTIGUOUS"]


def test_the_memory_budget_holds_and_the_newest_frames_stay() -> None:
    frame_bytes = 24 * 32 * 3
    ring = FrameRing(budget_bytes=100 * frame_bytes, max_fps=100, max_width=640)
    for first in range(0, 16 * 1000, 16):
        ring.push(first, _batch(first), fps=25.0)
    assert ring.nbytes <= 100 * frame_bytes
    assert ring.newest_index == 16 * 1000 - 1 and ring.evicted > 0
    latest = ring.latest()
    assert latest is not None and latest[0, 0, 0] == (16 * 1000 - 1) % 256
    # What is left is the most recent stretch, without holes.
    kept = ring.since(0, limit=10**6)
    assert kept is not None
    np.testing.assert_array_equal(np.diff(kept.indices), 1)


def test_lookups_by_index() -> None:
    ring = FrameRing(budget_bytes=10**8, max_fps=10, max_width=640)
    assert ring.latest() is None and ring.nearest(5) is None and ring.since(0, 10) is None
    for first in (0, 16, 32):
        ring.push(first, _batch(first), fps=10.0)
    assert ring.nearest(20)[0, 0, 0] == 20
    assert ring.nearest(-5)[0, 0, 0] == 0  # before the oldest: the oldest
    assert ring.nearest(500)[0, 0, 0] == 47  # after the newest: the newest
    part = ring.since(30, limit=5)
    assert part is not None
    np.testing.assert_array_equal(part.indices, [30, 31, 32, 33, 34])
    np.testing.assert_allclose(part.times_s, part.indices / 10.0)
    # A camera that changed resolution: the sizes come one at a time.
    ring.push(48, _batch(48, h=40, w=60), fps=10.0)
    first = ring.since(40, limit=100)
    assert first is not None and first.frames.shape[1:] == (24, 32, 3) and first.indices[-1] == 47
    second = ring.since(48, limit=100)
    assert second is not None and second.frames.shape[1:] == (40, 60, 3)
