"""Every stream's sliding window of its last W snippet features, kept on the model's device.

All windows live in one pooled tensor `[slots, W, D]`; a stream owns a slot while it is registered. Appending
the new features of many streams is one indexed write, and reading the windows of streams with the same fill
level is one gather, so the scheduler never copies features back to the host or loops over snippets. Slots
are recycled, so adding and removing streams does not grow memory; the pool doubles only when every slot is
taken.
"""

from __future__ import annotations

import numpy as np
import torch


class FeatureWindows:
    def __init__(self, window: int, dim: int, device: torch.device, capacity: int = 8) -> None:
        if window < 2:
            raise ValueError("the live window needs at least 2 snippets (the newest is provisional)")
        self.window = window
        self.dim = dim
        self.device = device
        self._pool = torch.zeros(capacity, window, dim, device=device)
        self._next = np.zeros(capacity, dtype=np.int64)  # write position of each slot's ring
        self._count = np.zeros(capacity, dtype=np.int64)  # snippets held, <= window
        self._free = list(range(capacity - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return int(self._pool.shape[0])

    @property
    def in_use(self) -> int:
        return self.capacity - len(self._free)

    def acquire(self) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._next[slot] = 0
        self._count[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        self._count[slot] = 0
        self._free.append(slot)

    def _grow(self) -> None:
        old = self.capacity
        extra = torch.zeros(old, self.window, self.dim, device=self.device, dtype=self._pool.dtype)
        self._pool = torch.cat([self._pool, extra])
        self._next = np.concatenate([self._next, np.zeros(old, dtype=np.int64)])
        self._count = np.concatenate([self._count, np.zeros(old, dtype=np.int64)])
        self._free.extend(range(2 * old - 1, old - 1, -1))

    def append(self, slots: np.ndarray, features: torch.Tensor) -> np.ndarray:
        """Write features `[k, D]` as the newest entry of each of `k` distinct slots; returns their fill levels."""
        slots = np.asarray(slots, dtype=np.int64)
        positions = self._next[slots]
        self._pool[
            torch.as_tensor(slots, device=self.device), torch.as_tensor(positions, device=self.device)
        ] = features.to(self._pool.dtype)
        self._next[slots] = (positions + 1) % self.window
        self._count[slots] = np.minimum(self._count[slots] + 1, self.window)
        return self._count[slots].copy()

    def count(self, slot: int) -> int:
        return int(self._count[slot])

    def gather(self, slots: np.ndarray, length: int) -> torch.Tensor:
        """The last `length` features of each slot, oldest first: `[len(slots), length, D]`."""
        slots = np.asarray(slots, dtype=np.int64)
        offsets = np.arange(length, dtype=np.int64) - length
        positions = (self._next[slots][:, None] + offsets[None, :]) % self.window
        rows = torch.as_tensor(np.repeat(slots[:, None], length, axis=1), device=self.device)
        return self._pool[rows, torch.as_tensor(positions, device=self.device)]
