"""A bounded per-stream ring buffer of recent decoded frames, for event snapshots, clips and the latest frame.

The stream's reader pushes every frame batch it reads (16 frames, one snippet's worth, with the media index of the
first). The ring keeps frames at no more than the clip frame rate and no wider than the clip width (integer
decimation by slicing: no per-frame work), and drops the oldest batches once its memory budget is spent, so its
size never depends on how long the stream runs. All methods are thread-safe; frames handed out are copies.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frames:
    """Frames with their media frame indices: `indices` `[N]` int64, `frames` `[N, H, W, 3]` uint8 RGB, and the
    source frame rate that turns an index into media seconds."""

    indices: np.ndarray
    frames: np.ndarray
    fps: float

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def times_s(self) -> np.ndarray:
        return self.indices / self.fps


class FrameRing:
    def __init__(self, budget_bytes: int, max_fps: float, max_width: int) -> None:
        self.budget_bytes = budget_bytes
        self.max_fps = max_fps
        self.max_width = max_width
        self._chunks: deque[Frames] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.pushed = 0  # frames kept, for tests and metrics
        self.evicted = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def push(self, first_index: int, batch: np.ndarray, fps: float) -> None:
        """Keep a batch of consecutive source frames `[F, H, W, 3]` uint8 RGB whose first has media index
        `first_index`. Raises ValueError for frames of another shape or type."""
        if batch.ndim != 4 or batch.shape[3] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"frames must be [F, H, W, 3] uint8, not {batch.shape} {batch.dtype}")
        if len(batch) == 0 or fps <= 0:
            return
        step = max(1, round(fps / self.max_fps))
        # Every `step`-th frame of the stream (by media index), so the kept rate is steady across batches.
        offset = (-first_index) % step
        k = max(1, math.ceil(batch.shape[2] / self.max_width))
        kept = batch[offset::step, ::k, ::k]
        h, w = kept.shape[1] - kept.shape[1] % 2, kept.shape[2] - kept.shape[2] % 2  # H.264 wants even sizes
        if len(kept) == 0 or h == 0 or w == 0:
            return
        frames = np.ascontiguousarray(kept[:, :h, :w])
        indices = first_index + offset + step * np.arange(len(frames), dtype=np.int64)
        chunk = Frames(indices, frames, fps)
        with self._lock:
            self._chunks.append(chunk)
            self._bytes += frames.nbytes
            self.pushed += len(frames)
            # The newest batch always stays, even alone over the budget: the latest frame is always there.
            while self._bytes > self.budget_bytes and len(self._chunks) > 1:
                old = self._chunks.popleft()
                self._bytes -= old.frames.nbytes
                self.evicted += len(old)

    def latest(self) -> np.ndarray | None:
        """The newest frame `[H, W, 3]`, or None before the first."""
        with self._lock:
            return self._chunks[-1].frames[-1].copy() if self._chunks else None

    def nearest(self, index: int) -> np.ndarray | None:
        """The kept frame closest to media index `index` (the oldest or newest one when it is outside)."""
        with self._lock:
            if not self._chunks:
                return None
            for chunk in self._chunks:
                if chunk.indices[-1] >= index:
                    at = int(np.abs(chunk.indices - index).argmin())
                    return chunk.frames[at].copy()
            return self._chunks[-1].frames[-1].copy()

    def since(self, index: int, limit: int) -> Frames | None:
        """Up to `limit` kept frames with media index >= `index`, oldest first (None when there are none)."""
        with self._lock:
            parts = [c for c in self._chunks if c.indices[-1] >= index]
        if not parts:
            return None
        # A camera that changed resolution: one size at a time (the next call returns the next size).
        shape = parts[0].frames.shape[1:]
        same = next((i for i, c in enumerate(parts) if c.frames.shape[1:] != shape), len(parts))
        parts = parts[:same]
        indices = np.concatenate([c.indices for c in parts])
        keep = np.flatnonzero(indices >= index)[:limit]
        if len(keep) == 0:
            return None
        frames = np.concatenate([c.frames for c in parts]) if len(parts) > 1 else parts[0].frames
        return Frames(indices[keep], frames[keep], parts[-1].fps)

    @property
    def newest_index(self) -> int | None:
        with self._lock:
            return int(self._chunks[-1].indices[-1]) if self._chunks else None

    @property
    def fps(self) -> float | None:
        with self._lock:
            return self._chunks[-1].fps if self._chunks else None

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._bytes = 0
