"""Spatially resolved snippet descriptors for the per-camera scene model: per region of the view, how fast things
move there, how much the image changes and what edges are there.

A snippet's frames are reduced to a 240x160 grey copy and cut into a `GRID` of square regions (12 columns x 8
rows of 20 x 20 px). Dense optical flow (OpenCV's DIS, ultrafast preset) is measured
between frames `FLOW_GAP` (3) apart (frames 0-3, 3-6, ..., 12-15 of a 16-frame snippet): a pedestrian at 10 fps
moves well under a pixel per frame at this size, below what DIS resolves between consecutive frames, while three
frames apart the displacement is large enough to measure and half the pairs cost half the time. Speeds are in
pixels per frame of the 240x160 copy. Per region (`DIM` = 18 numbers, all square-rooted to tame their tails):

- speed (8): the 50th, 90th and 99th percentiles of the region's pixel speeds and their largest speed, each at
  the snippet's fastest frame pair; the 90th and 99th percentiles averaged over the pairs; the fraction of the
  region's pixels moving faster than `MOVING_SPEED`, largest and averaged;
- change (2): mean absolute grey-level difference between consecutive frames, averaged and largest;
- appearance (8): magnitude-weighted histogram of image-gradient orientation (8 unsigned bins) over 4 evenly
  spaced frames.

Chosen by source-grouped cross-validation on training footage only (bench.scene_cv; model card, "Scene model"):
the v1 descriptor (160x120, consecutive-frame flow, 8x6 regions, 31 numbers with flow-direction histograms) had
a weak-label snippet AUC of 0.830 on the Ped2 CV; this one 0.905. Direction histograms and object (connected
component) statistics were tried and lowered it.

Stateless and deterministic: a snippet's descriptor depends only on its own frames (up to float32 rounding:
OpenCV's flow differs in the last bit of about 1 value in 1000 between calls). Speeds depend on the frame
rate, so a camera must be learned and scored with the same snippet geometry (the scene model stores it). Grid
statistics of flow and gradients are the classic cell-based descriptors of fixed-camera anomaly detection (Adam
et al., PAMI 2008; Kratz & Nishino, CVPR 2009); the region's position is appended by the scene model, not here.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from model.backbones.base import grey_copies

VERSION = "scene-grid-v2"
WORK_SIZE = (240, 160)  # (width, height) of the grey copy
GRID = (12, 8)  # (columns, rows) of regions, 20 x 20 px each
REGIONS = GRID[0] * GRID[1]
REGION_SIZE = (WORK_SIZE[0] // GRID[0], WORK_SIZE[1] // GRID[1])  # (width, height) of a region, px
FLOW_GAP = 3  # frames between the two frames of a flow pair
MOVING_SPEED = 0.5  # px per frame at WORK_SIZE
SPEED_QUANTILES = (0.5, 0.9, 0.99)
APPEARANCE_FRAMES = 4
ORIENTATION_BINS = 8
SPEED_DIM = len(SPEED_QUANTILES) + 1 + 2 + 2
DIM = SPEED_DIM + 2 + ORIENTATION_BINS


def region_positions() -> np.ndarray:
    """`[REGIONS, 2]` float32 (x, y) of each region's centre, in units of the view's width and height."""
    cols, rows = GRID
    x, y = np.meshgrid((np.arange(cols) + 0.5) / cols, (np.arange(rows) + 0.5) / rows)
    return np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)


def _regions(x: np.ndarray) -> np.ndarray:
    """`[..., 160, 240]` -> `[..., REGIONS, 400]`: each region's pixels, row-major over regions."""
    cols, rows = GRID
    w, h = REGION_SIZE
    lead = x.shape[:-2]
    x = x.reshape(*lead, rows, h, cols, w)
    x = np.moveaxis(x, -3, -2)  # [..., rows, cols, h, w]
    return x.reshape(*lead, REGIONS, h * w)


def _region_means(x: np.ndarray) -> np.ndarray:
    """`[..., 160, 240]` -> `[..., REGIONS]` float32 mean of each region, row-major over regions (summed in
    place over the image's own layout: no copy per region as `_regions` makes)."""
    cols, rows = GRID
    w, h = REGION_SIZE
    lead = x.shape[:-2]
    sums = x.reshape(*lead, rows, h, cols, w).sum(axis=(-3, -1), dtype=np.float32)
    return sums.reshape(*lead, REGIONS) / np.float32(h * w)


def _region_map() -> np.ndarray:
    """`[160, 240]` int32: the region of each pixel of the grey copy, row-major over regions."""
    x = np.arange(WORK_SIZE[0]) // REGION_SIZE[0]
    y = np.arange(WORK_SIZE[1]) // REGION_SIZE[1]
    return (y[:, None] * GRID[0] + x[None, :]).astype(np.int32)


_REGION_MAP = _region_map()


def _region_histograms(bins: np.ndarray, weights: np.ndarray, nbins: int) -> np.ndarray:
    """Per-region sum of `weights` in each bin over the region's pixels, divided by its pixel count:
    `[..., 160, 240]` ints and floats -> `[..., REGIONS, nbins]` (one bincount, no per-region copy)."""
    lead = bins.shape[:-2]
    cells = int(np.prod(lead))
    frame = np.arange(cells, dtype=np.int64).reshape(*lead, 1, 1)
    index = (frame * REGIONS + _REGION_MAP) * nbins + bins
    sums = np.bincount(index.ravel(), weights=weights.ravel(), minlength=cells * REGIONS * nbins)
    return (sums / (REGION_SIZE[0] * REGION_SIZE[1])).reshape(*lead, REGIONS, nbins)


class SceneDescriptor:
    """Snippets `[S, F, H, W, 3]` uint8 RGB -> region descriptors `[S, REGIONS, DIM]` float32.

    Thread-safe: each thread gets its own optical-flow instance (DIS objects are not thread-safe)."""

    version = VERSION
    regions = REGIONS
    dim = DIM

    def __init__(self) -> None:
        self._local = threading.local()
        self.positions = region_positions()

    def _flow(self) -> cv2.DISOpticalFlow:
        flow = getattr(self._local, "flow", None)
        if flow is None:
            flow = self._local.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        return flow

    def describe(self, frames: np.ndarray) -> np.ndarray:
        """Raises `ValueError` for anything but uint8 `[S, F, H, W, 3]`."""
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 [S, F, H, W, 3] frames, got {frames.dtype} {list(frames.shape)}"
            )
        if len(frames) == 0:
            return np.zeros((0, REGIONS, DIM), np.float32)
        return self.describe_grey(grey_copies(frames, WORK_SIZE))

    def describe_grey(self, grey: np.ndarray) -> np.ndarray:
        """`[S, F, 160, 240]` uint8 grey -> `[S, REGIONS, DIM]` float32. A snippet of one frame has no motion;
        one of at most `FLOW_GAP` frames measures flow between its first and last. Raises `ValueError` for
        another shape or dtype."""
        if grey.ndim != 4 or grey.shape[2:] != (WORK_SIZE[1], WORK_SIZE[0]) or grey.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 [S, F, {WORK_SIZE[1]}, {WORK_SIZE[0]}] grey frames, got {grey.dtype} "
                f"{list(grey.shape)}"
            )
        s, f, h, w = grey.shape
        if s == 0:
            return np.zeros((0, REGIONS, DIM), np.float32)
        if f > 1:
            gap = min(FLOW_GAP, f - 1)
            starts = range(0, f - gap, gap)
            dis = self._flow()
            flow = np.stack(
                [dis.calc(snippet[i], snippet[i + gap], None) for snippet in grey for i in starts]
            ).reshape(s, len(starts), h, w, 2) / np.float32(gap)
            change = cv2.absdiff(grey[:, 1:].reshape(-1, w), grey[:, :-1].reshape(-1, w)).reshape(
                s, f - 1, h, w
            )
        else:
            flow = np.zeros((s, 1, h, w, 2), np.float32)
            change = np.zeros((s, 1, h, w), np.uint8)
        return np.concatenate(
            [self._speed(flow), self._change(change), self._appearance(grey)], axis=-1
        ).astype(np.float32)

    @staticmethod
    def _speed(flow: np.ndarray) -> np.ndarray:
        """`[S, P, h, w, 2]` flow -> `[S, R, SPEED_DIM]`."""
        w = flow.shape[-2]
        speed = cv2.magnitude(
            np.ascontiguousarray(flow[..., 0]).reshape(-1, w),
            np.ascontiguousarray(flow[..., 1]).reshape(-1, w),
        ).reshape(flow.shape[:-1])
        regions = _regions(speed)  # [S, P, R, n]
        quantiles = np.quantile(regions, SPEED_QUANTILES, axis=-1)  # [Q, S, P, R]
        moving = (regions > MOVING_SPEED).mean(axis=-1)  # [S, P, R]
        return np.sqrt(
            np.concatenate(
                [
                    np.moveaxis(quantiles.max(axis=2), 0, -1),
                    regions.max(axis=-1).max(axis=1)[..., None],
                    np.moveaxis(quantiles[1:].mean(axis=2), 0, -1),
                    moving.max(axis=1)[..., None],
                    moving.mean(axis=1)[..., None],
                ],
                axis=-1,
            )
        )

    @staticmethod
    def _change(change: np.ndarray) -> np.ndarray:
        """`[S, P, h, w]` uint8 absolute differences -> `[S, R, 2]`, in units of the grey range."""
        changes = _region_means(change) / np.float32(255.0)  # [S, P, R]
        return np.sqrt(np.stack([changes.mean(axis=1), changes.max(axis=1)], axis=-1))

    @staticmethod
    def _appearance(grey: np.ndarray) -> np.ndarray:
        # Edges change slowly within a snippet: a few evenly spaced frames describe them.
        f = grey.shape[1]
        g = grey[:, np.unique(np.linspace(0, f - 1, min(f, APPEARANCE_FRAMES)).round().astype(int))]
        g = g.astype(np.float32)
        gx = np.zeros_like(g)
        gy = np.zeros_like(g)
        gx[..., :, 1:-1] = g[..., :, 2:] - g[..., :, :-2]
        gy[..., 1:-1, :] = g[..., 2:, :] - g[..., :-2, :]
        w = g.shape[-1]
        magnitude, angle = cv2.cartToPolar(gx.reshape(-1, w), gy.reshape(-1, w))
        magnitude = magnitude.reshape(g.shape) / 255.0
        # Unsigned orientation: angles in [pi, 2 pi) less pi, which is exact in float32 (Sterbenz) and gives
        # the same bins as np.mod(angle, pi) at a third of its cost; integer gradients land on bin edges often.
        # The second fold catches an angle rounded up to 2 pi, which np.mod sends to bin 0.
        pi = np.float32(np.pi)
        angle = angle.reshape(g.shape)
        angle = np.where(angle >= pi, angle - pi, angle)
        angle = np.where(angle >= pi, angle - pi, angle)
        angle *= np.float32(ORIENTATION_BINS / np.pi)
        bins = np.minimum(angle.astype(np.int32), ORIENTATION_BINS - 1)
        hist = _region_histograms(bins, magnitude, ORIENTATION_BINS)  # [S, F, R, B]
        return np.sqrt(hist.mean(axis=1))
