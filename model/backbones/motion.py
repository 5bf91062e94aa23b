"""`motion`: the embedded, weight-free backbone, so the whole system runs on a fresh offline machine.

Each snippet is described by hand-made OpenCV/numpy statistics on a spatial grid (4x4 cells over the frame,
computed on a 160x120 grey copy of every frame):

- motion: dense optical flow (DIS, ultrafast preset) between consecutive sampled frames of the snippet; per
  cell a histogram of flow direction (8 bins, weighted by flow magnitude) and a histogram of flow speed
  (4 bins: static, slow, walking pace, fast, as fractions of the cell's pixels);
- change: per cell mean absolute grey-level difference between consecutive frames;
- appearance: per cell a histogram of image-gradient orientation (8 unsigned bins, weighted by gradient
  magnitude), averaged over the snippet's frames.

Magnitudes are square-rooted to compress their range. 16 cells x (8 + 4 + 1 + 8) = 336 dimensions.

What it captures: where in the view things move, how fast and in which direction, how much the image changes,
and coarse local shape/texture (edges). That is enough to tell a cyclist or a cart (faster, different motion
pattern) from walking pedestrians in a fixed camera. What it cannot capture: any semantics (what an object
is, actions such as fighting or stealing, objects that look unusual but move normally), colour, fine detail
below a cell, or anything about a moving camera beyond "everything moves". Flow speed bins are in pixels per
sampled-frame pair at 160x120, so sub-sampling frames or a different frame rate shifts the speed scale:
train and serve with the same snippet geometry. For semantic anomalies use the `clip` backbone.

The descriptor is deterministic and stateless: a snippet's vector depends only on its own frames.

Versions (the identity's `weights`; a head is served only with the version it was trained on):

- `motion-grid-v1`: the 336 numbers above.
- `motion-grid-v2`: v1 followed by the motion-dynamics block of `model.backbones.dynamics` (68 numbers: how
  erratically things move, pooled independently of where), 404 in all. Chosen for fights by source-grouped
  cross-validation on surv-fight (MODEL_CARD.md, "Representation").
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch

from model.backbones import dynamics
from model.backbones.base import Backbone, check_snippet_frames, grey_copies
from model.backbones.identity import BackboneIdentity

# Bump whenever anything below changes the numbers: the version is the identity's "weights".
DESCRIPTOR_VERSION = "motion-grid-v1"
DYNAMICS_VERSION = "motion-grid-v2"
WORK_SIZE = (160, 120)  # (width, height) of the grey copy every statistic is computed on
GRID = (4, 4)  # (columns, rows) of cells
DIRECTION_BINS = 8
SPEED_EDGES = np.array([0.25, 1.0, 3.0], dtype=np.float32)  # px per frame pair at WORK_SIZE
ORIENTATION_BINS = 8
CELLS = GRID[0] * GRID[1]
SPEED_BINS = len(SPEED_EDGES) + 1
MOTION_DIM = CELLS * (DIRECTION_BINS + SPEED_BINS + 1)
DIM = MOTION_DIM + CELLS * ORIENTATION_BINS
# Where each statistic sits in the vector; each block is cell-major ([cell, bin]).
LAYOUT = {
    "flow_direction": slice(0, CELLS * DIRECTION_BINS),
    "flow_speed": slice(CELLS * DIRECTION_BINS, CELLS * (DIRECTION_BINS + SPEED_BINS)),
    "change": slice(CELLS * (DIRECTION_BINS + SPEED_BINS), MOTION_DIM),
    "orientation": slice(MOTION_DIM, DIM),
}
# Every version: (architecture, dim).
VERSIONS = {
    DESCRIPTOR_VERSION: ("opencv-grid-4x4", DIM),
    DYNAMICS_VERSION: ("opencv-grid-4x4+dynamics-240x180", DIM + dynamics.DIM),
}


def _cell_map() -> np.ndarray:
    w, h = WORK_SIZE
    cols = np.arange(w) * GRID[0] // w
    rows = np.arange(h) * GRID[1] // h
    return (rows[:, None] * GRID[0] + cols[None, :]).astype(np.int64)  # [h, w] cell id of every pixel


class MotionBackbone(Backbone):
    """`threads` > 1 describes groups of snippets in parallel (OpenCV and numpy release the GIL); the
    result is identical for any thread count, since every snippet is described on its own."""

    def __init__(
        self, device: str | torch.device = "cpu", threads: int = 1, version: str = DESCRIPTOR_VERSION
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown motion descriptor {version!r}; expected one of {sorted(VERSIONS)}")
        self.device = torch.device(device)
        self.threads = max(1, int(threads))
        self.version = version
        architecture, dim = VERSIONS[version]
        self.identity = BackboneIdentity(name="motion", architecture=architecture, weights=version, dim=dim)
        self._cells = _cell_map()
        self._cell_pixels = np.bincount(self._cells.ravel(), minlength=CELLS).astype(np.float32)
        # DIS instances are not thread-safe: one per worker thread.
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(self.threads, "motion") if self.threads > 1 else None

    def _flow(self) -> cv2.DISOpticalFlow:
        flow = getattr(self._local, "flow", None)
        if flow is None:
            flow = self._local.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        return flow

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def encode_snippets(
        self, frames: np.ndarray | torch.Tensor, captions: Sequence[str] | None = None
    ) -> torch.Tensor:
        s = check_snippet_frames(frames)[0]
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu().numpy()
        features = self.describe(frames) if s else np.zeros((0, self.identity.dim), np.float32)
        return torch.from_numpy(features).to(self.device)

    # -- the descriptor ----------------------------------------------------------------------------------
    def describe(self, frames: np.ndarray) -> np.ndarray:
        """[S, F, H, W, 3] uint8 RGB -> [S, identity.dim] float32."""
        s = len(frames)
        if self._pool is None or s < 2:
            return self._describe(frames)
        bounds = np.linspace(0, s, min(self.threads, s) + 1).astype(int)
        parts = self._pool.map(self._describe, [frames[a:b] for a, b in itertools.pairwise(bounds)])
        return np.concatenate(list(parts))

    def _describe(self, frames: np.ndarray) -> np.ndarray:
        grid = self.describe_grey(self.preprocess(frames))
        if self.version == DESCRIPTOR_VERSION:
            return grid
        return np.concatenate([grid, dynamics.describe(frames, self._flow())], axis=1)

    @staticmethod
    def preprocess(frames: np.ndarray) -> np.ndarray:
        """[S, F, H, W, 3] uint8 RGB -> [S, F, 120, 160] uint8 grey copies at WORK_SIZE."""
        return grey_copies(frames, WORK_SIZE)

    def describe_grey(self, grey: np.ndarray) -> np.ndarray:
        """[S, F, 120, 160] uint8 grey (from `preprocess`) -> [S, DIM] float32."""
        s, f = grey.shape[:2]
        appearance = self._orientation_histograms(grey)
        # One sampled frame per snippet has no frame pair: its motion statistics are zero.
        motion = self._motion_histograms(grey) if f > 1 else np.zeros((s, MOTION_DIM), np.float32)
        return np.concatenate([motion, appearance], axis=1)

    def _cell_histograms(self, bins: np.ndarray, weights: np.ndarray, nbins: int) -> np.ndarray:
        """Sum `weights` [S, K, h, w] per (snippet, cell, bin) and divide by K * cell pixels -> [S, CELLS, nbins]."""
        s, k = bins.shape[:2]
        index = (np.arange(s)[:, None, None, None] * CELLS + self._cells) * nbins + bins
        sums = np.bincount(index.ravel(), weights=weights.ravel(), minlength=s * CELLS * nbins)
        return (sums.reshape(s, CELLS, nbins) / (k * self._cell_pixels[None, :, None])).astype(np.float32)

    def _orientation_histograms(self, grey: np.ndarray) -> np.ndarray:
        g = grey.astype(np.float32)
        gx = np.zeros_like(g)
        gy = np.zeros_like(g)
        gx[..., :, 1:-1] = g[..., :, 2:] - g[..., :, :-2]
        gy[..., 1:-1, :] = g[..., 2:, :] - g[..., :-2, :]
        w = g.shape[-1]
        magnitude, angle = cv2.cartToPolar(gx.reshape(-1, w), gy.reshape(-1, w), angleInDegrees=True)
        orientation = np.mod(angle, 180.0)  # unsigned: an edge and its mirror are the same edge
        bins = np.minimum((orientation * (ORIENTATION_BINS / 180.0)).astype(np.int64), ORIENTATION_BINS - 1)
        hist = self._cell_histograms(
            bins.reshape(g.shape), magnitude.reshape(g.shape) / 255.0, ORIENTATION_BINS
        )
        return np.sqrt(hist).reshape(len(g), -1)

    def _motion_histograms(self, grey: np.ndarray) -> np.ndarray:
        s, f, h, w = grey.shape
        firsts = grey[:, :-1].reshape(-1, h, w)
        seconds = grey[:, 1:].reshape(-1, h, w)
        dis = self._flow()
        flow = np.stack([dis.calc(a, b, None) for a, b in zip(firsts, seconds, strict=True)])
        speed, angle = cv2.cartToPolar(
            np.ascontiguousarray(flow[..., 0]).reshape(-1, w),
            np.ascontiguousarray(flow[..., 1]).reshape(-1, w),
            angleInDegrees=True,
        )
        shape = (s, f - 1, h, w)
        speed = speed.reshape(shape)
        direction = np.minimum((angle * (DIRECTION_BINS / 360.0)).astype(np.int64), DIRECTION_BINS - 1)
        directions = self._cell_histograms(direction.reshape(shape), speed, DIRECTION_BINS)
        speed_bin = np.searchsorted(SPEED_EDGES, speed, side="right")
        speeds = self._cell_histograms(speed_bin, np.ones_like(speed), SPEED_BINS)
        change = np.abs(grey[:, 1:].astype(np.int16) - grey[:, :-1].astype(np.int16)).astype(np.float32) / 255
        changes = self._cell_histograms(np.zeros(shape, np.int64), change, 1)
        return np.concatenate(
            [np.sqrt(directions).reshape(s, -1), speeds.reshape(s, -1), np.sqrt(changes).reshape(s, -1)],
            axis=1,
        )
