"""The motion-dynamics descriptor: how erratically things move, wherever in the view they are.

Added to the motion descriptor by `motion-grid-v2` (see `model.backbones.motion`) for behaviour such as fights,
which v1's fixed-cell histograms of where and how fast things move describe poorly across cameras (surv-fight,
source-grouped CV with a linear probe: v1 clip AUC 0.74, this block alone 0.86; MODEL_CARD.md, "Representation").

Dense DIS optical flow between consecutive frames of a snippet on a 240x180 grey copy; per cell of a 4x4 grid,
ten statistics:

- mean speed, share of moving pixels (speed > 0.5 px per frame pair), 95th speed percentile, temporal standard
  deviation of the cell's mean speed;
- Violent Flows (Hassner, Itcher & Kliper-Gross, CVPRW 2012): the mean change of flow magnitude between
  consecutive frame pairs, and the share of pixels whose change exceeds the snippet's mean change (ViF's
  binarisation);
- flow acceleration (mean norm of the flow's change between pairs), mean absolute divergence and curl;
- the entropy of the flow direction of moving pixels (8 bins, magnitude-weighted): scattered, colliding motion
  has high entropy, a walker low.

Pooling keeps it independent of where things happen: the four cells with the highest mean speed in descending
order (40), the mean and standard deviation over all cells (20), and 8 whole-frame statistics (mean speed,
magnitude change, acceleration, divergence, curl, temporal std of speed, moving share, 99th speed percentile).
Every value is square-rooted: DIM = 68. Speeds are px per frame pair at 240x180, so train and serve with the
same snippet geometry, as for v1. A snippet of fewer than 3 frames has no magnitude change: those statistics
are 0 (1 frame: all 0).
"""

from __future__ import annotations

import cv2
import numpy as np

from model.backbones.base import grey_copies

WORK_SIZE = (240, 180)  # (width, height)
GRID = (4, 4)  # (columns, rows)
CELLS = GRID[0] * GRID[1]
MOVING_SPEED = 0.5  # px per frame pair at WORK_SIZE
DIRECTION_BINS = 8
CELL_STATS = 10
TOP_CELLS = 4
GLOBAL_STATS = 8
DIM = TOP_CELLS * CELL_STATS + 2 * CELL_STATS + GLOBAL_STATS


def _per_cell(x: np.ndarray) -> np.ndarray:
    """[S, K, h, w] -> [S, K, CELLS, h/rows * w/cols]: each cell's pixels (WORK_SIZE divides into the grid)."""
    s, k, h, w = x.shape
    ch, cw = h // GRID[1], w // GRID[0]
    cells = x.reshape(s, k, GRID[1], ch, GRID[0], cw).transpose(0, 1, 2, 4, 3, 5)
    return cells.reshape(s, k, CELLS, ch * cw)


def describe_flow(flow: np.ndarray) -> np.ndarray:
    """[S, P, 180, 240, 2] float32 flow of P consecutive frame pairs per snippet -> [S, DIM] float32."""
    s, p = flow.shape[:2]
    if p == 0:
        return np.zeros((s, DIM), np.float32)
    u, v = flow[..., 0], flow[..., 1]
    speed = np.sqrt(u * u + v * v)  # [S, P, h, w]
    if p > 1:
        change = np.abs(np.diff(speed, axis=1))
        acceleration = np.sqrt((np.diff(flow, axis=1) ** 2).sum(-1))
    else:
        change = acceleration = np.zeros_like(speed[:, :1])
    divergence = np.abs(np.gradient(u, axis=3) + np.gradient(v, axis=2))
    curl = np.abs(np.gradient(v, axis=3) - np.gradient(u, axis=2))
    moving = speed > MOVING_SPEED

    cell_speed = _per_cell(speed)  # [S, P, C, n]
    cell_change = _per_cell(change)
    over = change > change.mean(axis=(1, 2, 3), keepdims=True)
    # Direction histogram of moving pixels, magnitude-weighted, per (snippet, cell).
    angle = np.arctan2(v, u)
    direction = np.minimum(
        ((angle + np.pi) * (DIRECTION_BINS / (2 * np.pi))).astype(np.int64), DIRECTION_BINS - 1
    )
    cell_dir = _per_cell(direction)
    cell_w = _per_cell(np.where(moving, speed, 0.0))
    index = (
        np.arange(s)[:, None, None, None] * CELLS + np.arange(CELLS)[None, None, :, None]
    ) * DIRECTION_BINS
    hist = np.bincount(
        (index + cell_dir).ravel(), weights=cell_w.ravel(), minlength=s * CELLS * DIRECTION_BINS
    ).reshape(s, CELLS, DIRECTION_BINS)
    hist = hist / (hist.sum(-1, keepdims=True) + 1e-6)
    entropy = -(hist * np.log(hist + 1e-9)).sum(-1)  # [S, C]

    cells = np.stack(
        [
            cell_speed.mean(axis=(1, 3)),
            _per_cell(moving).mean(axis=(1, 3)),
            cell_change.mean(axis=(1, 3)),
            _per_cell(over).mean(axis=(1, 3)),
            _per_cell(acceleration).mean(axis=(1, 3)),
            _per_cell(divergence).mean(axis=(1, 3)),
            _per_cell(curl).mean(axis=(1, 3)),
            entropy,
            cell_speed.mean(axis=3).std(axis=1),
            np.percentile(cell_speed.transpose(0, 2, 1, 3).reshape(s, CELLS, -1), 95, axis=2),
        ],
        axis=2,
    )  # [S, C, CELL_STATS]
    order = np.argsort(-cells[..., 0], axis=1, kind="stable")
    top = np.take_along_axis(cells, order[..., None], axis=1)[:, :TOP_CELLS]
    whole = np.stack(
        [
            speed.mean(axis=(1, 2, 3)),
            change.mean(axis=(1, 2, 3)),
            acceleration.mean(axis=(1, 2, 3)),
            divergence.mean(axis=(1, 2, 3)),
            curl.mean(axis=(1, 2, 3)),
            speed.mean(axis=(2, 3)).std(axis=1),
            moving.mean(axis=(1, 2, 3)),
            np.percentile(speed.reshape(s, -1), 99, axis=1),
        ],
        axis=1,
    )
    if p == 1:  # no frame-pair change: those statistics are undefined, report 0
        top[..., [2, 3, 4]] = 0
        whole[:, [1, 2]] = 0
    vector = np.concatenate([top.reshape(s, -1), cells.mean(1), cells.std(1), whole], axis=1)
    return np.sqrt(np.abs(vector)).astype(np.float32)


def describe(frames: np.ndarray, dis: cv2.DISOpticalFlow) -> np.ndarray:
    """[S, F, H, W, 3] uint8 RGB -> [S, DIM] float32, with `dis` (one per thread: DIS is not thread-safe)."""
    grey = grey_copies(frames, WORK_SIZE)
    s, f, h, w = grey.shape
    if f < 2:
        return np.zeros((s, DIM), np.float32)
    firsts = grey[:, :-1].reshape(-1, h, w)
    seconds = grey[:, 1:].reshape(-1, h, w)
    flow = np.stack([dis.calc(a, b, None) for a, b in zip(firsts, seconds, strict=True)])
    return describe_flow(flow.reshape(s, f - 1, h, w, 2))
