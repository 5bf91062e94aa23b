"""Spatially resolved snippet descriptors for the per-camera scene model: per region of the view, what moves
there, how fast and in which direction, how much the image changes and what edges are there.

A snippet's frames are reduced to a 160x120 grey copy and cut into a `GRID` of square regions (8 x 6, 20 x 20 px
each). Per region, from dense optical flow (OpenCV's DIS, ultrafast preset) between consecutive sampled frames:

- speed: for each of `SPEED_EDGES` (px per frame pair at 160x120) the fraction of the region's pixels moving
  faster, averaged over the frame pairs and at its largest frame pair (a cyclist crosses a region in a few frames);
- the mean speed of the region's moving pixels (speed > 0.25), largest and averaged over frame pairs, so a fast
  small object counts as fast whatever its size;
- direction: magnitude-weighted histogram of flow direction (8 bins), square-rooted;
- the 90th percentile of speed at the largest frame pair, square-rooted;
- change: mean absolute grey-level difference between consecutive frames, averaged and largest;
- appearance: magnitude-weighted histogram of image-gradient orientation (8 unsigned bins), square-rooted,
  over up to 4 evenly spaced frames.

That is `DIM` (31) numbers per region, `REGIONS` (48) regions per snippet. Stateless and deterministic: a
snippet's descriptor depends only on its own frames. Speeds are in pixels per sampled-frame pair, so a camera must
be learned and scored with the same snippet geometry (the scene model stores it and refuses another).
Grid statistics of flow and gradients are the classic cell-based descriptors of fixed-camera anomaly detection
(e.g. Adam et al., PAMI 2008, "Robust real-time unusual event detection using multiple fixed-location monitors";
Kratz & Nishino, CVPR 2009); the region's position is appended by the memory bank, not here.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

VERSION = "scene-grid-v1"
WORK_SIZE = (160, 120)  # (width, height) of the grey copy
GRID = (8, 6)  # (columns, rows) of regions
REGIONS = GRID[0] * GRID[1]
SPEED_EDGES = np.array([0.25, 0.5, 1.0, 2.0, 4.0], dtype=np.float32)
MOVING_SPEED = 0.25
APPEARANCE_FRAMES = 4
DIRECTION_BINS = 8
ORIENTATION_BINS = 8
DIM = 2 * len(SPEED_EDGES) + 2 + DIRECTION_BINS + 1 + 2 + ORIENTATION_BINS


def region_positions() -> np.ndarray:
    """`[REGIONS, 2]` float32 (x, y) of each region's centre, in units of the view's width and height."""
    cols, rows = GRID
    x, y = np.meshgrid((np.arange(cols) + 0.5) / cols, (np.arange(rows) + 0.5) / rows)
    return np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)


def _regions(x: np.ndarray) -> np.ndarray:
    """`[..., 120, 160]` -> `[..., REGIONS, 400]`: each region's pixels, row-major over regions."""
    cols, rows = GRID
    h, w = WORK_SIZE[1] // rows, WORK_SIZE[0] // cols
    lead = x.shape[:-2]
    x = x.reshape(*lead, rows, h, cols, w)
    x = np.moveaxis(x, -3, -2)  # [..., rows, cols, h, w]
    return x.reshape(*lead, REGIONS, h * w)


def _weighted_histogram(bins: np.ndarray, weights: np.ndarray, nbins: int) -> np.ndarray:
    """Per-region sum of `weights` in each bin over the region's pixels, divided by its pixel count:
    `[..., R, n]` ints and floats -> `[..., R, nbins]`."""
    lead, n = bins.shape[:-1], bins.shape[-1]
    cells = int(np.prod(lead))
    index = np.arange(cells).reshape(*lead, 1) * nbins + bins
    sums = np.bincount(index.ravel(), weights=weights.ravel(), minlength=cells * nbins)
    return (sums / n).reshape(*lead, nbins)


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
        s, f = frames.shape[:2]
        if s == 0:
            return np.zeros((0, REGIONS, DIM), np.float32)
        grey = np.stack(
            [
                cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), WORK_SIZE, interpolation=cv2.INTER_AREA)
                for frame in frames.reshape(s * f, *frames.shape[2:])
            ]
        ).reshape(s, f, WORK_SIZE[1], WORK_SIZE[0])
        return self.describe_grey(grey)

    def describe_grey(self, grey: np.ndarray) -> np.ndarray:
        """`[S, F, 120, 160]` uint8 grey -> `[S, REGIONS, DIM]` float32. A snippet of one frame has no motion."""
        s, f, h, w = grey.shape
        if f > 1:
            dis = self._flow()
            pairs = zip(grey[:, :-1].reshape(-1, h, w), grey[:, 1:].reshape(-1, h, w), strict=True)
            flow = np.stack([dis.calc(a, b, None) for a, b in pairs]).reshape(s, f - 1, h, w, 2)
            change = np.abs(grey[:, 1:].astype(np.int16) - grey[:, :-1].astype(np.int16)) / 255.0
        else:
            flow = np.zeros((s, 1, h, w, 2), np.float32)
            change = np.zeros((s, 1, h, w))
        motion = self._motion(flow, change.astype(np.float32))
        return np.concatenate([motion, self._appearance(grey)], axis=-1).astype(np.float32)

    @staticmethod
    def _motion(flow: np.ndarray, change: np.ndarray) -> np.ndarray:
        w = flow.shape[-2]
        speed, angle = cv2.cartToPolar(
            np.ascontiguousarray(flow[..., 0]).reshape(-1, w),
            np.ascontiguousarray(flow[..., 1]).reshape(-1, w),
        )
        speed = speed.reshape(flow.shape[:-1])
        regions = _regions(speed)  # [S, P, R, n]
        faster = _weighted_histogram(
            np.searchsorted(SPEED_EDGES, regions, side="left"), np.ones_like(regions), len(SPEED_EDGES) + 1
        )
        faster = np.cumsum(faster[..., ::-1], axis=-1)[..., -2::-1]  # fraction above each edge [S, P, R, E]
        moving = regions > MOVING_SPEED
        moving_speed = (regions * moving).sum(-1) / np.maximum(moving.sum(-1), 1)  # [S, P, R]
        direction = (angle.reshape(speed.shape) * (DIRECTION_BINS / (2 * np.pi))).astype(np.int64)
        direction = np.minimum(direction, DIRECTION_BINS - 1)
        directions = _weighted_histogram(_regions(direction), regions, DIRECTION_BINS).mean(axis=1)
        q90 = np.quantile(regions, 0.9, axis=-1).max(axis=1)
        changes = _regions(change).mean(-1)  # [S, P, R]
        return np.concatenate(
            [
                faster.mean(axis=1),
                faster.max(axis=1),
                np.sqrt(moving_speed.max(axis=1))[..., None],
                np.sqrt(moving_speed.mean(axis=1))[..., None],
                np.sqrt(directions),
                np.sqrt(q90)[..., None],
                np.sqrt(changes.mean(axis=1))[..., None],
                np.sqrt(changes.max(axis=1))[..., None],
            ],
            axis=-1,
        )

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
        orientation = np.mod(angle.reshape(g.shape), np.pi) * (ORIENTATION_BINS / np.pi)
        bins = np.minimum(orientation.astype(np.int64), ORIENTATION_BINS - 1)
        hist = _weighted_histogram(_regions(bins), _regions(magnitude), ORIENTATION_BINS)  # [S, F, R, B]
        return np.sqrt(hist.mean(axis=1))
