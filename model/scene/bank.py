"""A bounded memory bank of region descriptors with nearest-neighbour search (scikit-learn).

Vectors are region descriptors with the region's position appended (scaled by `position_weight`), so a query is
compared with what was seen at and near the same place: a bicycle's speed on a walkway is far from every walking
speed seen there, while a car's speed on the road next to it is not.

Bound: at most `max_vectors` are kept (a full bank is trimmed `REBUILD_FRACTION` below it at once), by bottom-k
sampling (Cohen & Kaplan, PODC 2007) of whole snippets: every
snippet's vectors share a priority from a fixed hash of the snippet's number, and the lowest priorities stay. The
sample is uniform over every snippet ever added, incremental, and deterministic for the same footage in the same
order. Pinned snippets (an operator's false alarms) get priority 0 and are never dropped.

Search: a scikit-learn `NearestNeighbors` index over the bulk of the bank plus an exact numpy search over the
vectors added since it was built; the index is rebuilt once that recent part exceeds `REBUILD_FRACTION` of it, so
adding a snippet costs no index build.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

REBUILD_FRACTION = 0.05
REBUILD_MIN = 2048
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al., OOPSLA 2014) of uint64 `x`: a fixed, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = (x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


class MemoryBank:
    """Vectors `[N, d]` float32 with bounded size and k-nearest-neighbour distances."""

    def __init__(self, dim: int, max_vectors: int) -> None:
        if max_vectors < 1:
            raise ValueError(f"max_vectors must be >= 1, got {max_vectors}")
        self.dim = dim
        self.max_vectors = max_vectors
        # Capacity buffers grown by doubling (never past the bound plus one add), so adding a snippet copies only
        # its own vectors: [:_n] is the bank.
        self._vectors = np.zeros((0, dim), np.float32)
        self._priorities = np.zeros(0, np.uint64)
        self._groups = np.zeros(0, np.int64)  # the snippet number of each vector
        self._regions = np.zeros(0, np.int16)  # the region of each vector
        self._n = 0
        self.added = 0  # snippets ever added (the next snippet number)
        self._snippets = 0
        self._index: NearestNeighbors | None = None
        self._indexed = 0  # vectors[:_indexed] are in the index

    def __len__(self) -> int:
        return self._n

    vectors = property(lambda self: self._view(self._vectors), doc="`[N, d]` float32, a read-only view")
    priorities = property(
        lambda self: self._view(self._priorities), doc="`[N]` bottom-k priority of each vector"
    )
    groups = property(lambda self: self._view(self._groups), doc="`[N]` the snippet number of each vector")
    regions = property(lambda self: self._view(self._regions), doc="`[N]` the region of each vector")

    def _view(self, buffer: np.ndarray) -> np.ndarray:
        view = buffer[: self._n]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held, spare capacity included."""
        return int(sum(a.nbytes for a in (self._vectors, self._priorities, self._groups, self._regions)))

    @property
    def snippets(self) -> int:
        return self._snippets

    def _set(
        self, vectors: np.ndarray, priorities: np.ndarray, groups: np.ndarray, regions: np.ndarray
    ) -> None:
        """Replace the contents (compact buffers of exactly these arrays)."""
        self._vectors = np.ascontiguousarray(vectors, np.float32)
        self._priorities = np.asarray(priorities, np.uint64).copy()
        self._groups = np.asarray(groups, np.int64).copy()
        self._regions = np.asarray(regions, np.int16).copy()
        self._n = len(self._vectors)

    def _reserve(self, needed: int, largest_add: int) -> None:
        capacity = len(self._vectors)
        if needed <= capacity:
            return
        grown = max(needed, min(2 * capacity, self.max_vectors + largest_add), 64)
        for name in ("_vectors", "_priorities", "_groups", "_regions"):
            old = getattr(self, name)
            new = np.zeros((grown, *old.shape[1:]), old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def add(self, vectors: np.ndarray, pinned: bool = False) -> None:
        """Append snippets' region vectors `[S, R, d]`; then drop the snippets of highest priority beyond
        `max_vectors` vectors. Raises `ValueError` for another shape."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 3 or vectors.shape[2] != self.dim:
            raise ValueError(f"expected [S, R, {self.dim}] vectors, got {list(vectors.shape)}")
        s, r = vectors.shape[:2]
        numbers = np.arange(self.added, self.added + s, dtype=np.int64)
        # Priority 0 is reserved for pinned snippets.
        priorities = np.zeros(s, np.uint64) if pinned else np.maximum(splitmix64(numbers), np.uint64(1))
        self.added += s
        n, end = self._n, self._n + s * r
        self._reserve(end, s * r)
        self._vectors[n:end] = vectors.reshape(s * r, self.dim)
        self._priorities[n:end] = np.repeat(priorities, r)
        self._groups[n:end] = np.repeat(numbers, r)
        self._regions[n:end] = np.tile(np.arange(r, dtype=np.int16), s)
        self._n = end
        self._snippets += s
        if self._n > self.max_vectors:
            # Whole snippets go, those of highest (priority, number) first; every snippet has R vectors.
            groups, priorities = self.groups, self.priorities
            numbers, first = np.unique(groups, return_index=True)
            order = np.lexsort((numbers, priorities[first]))
            # Trimmed REBUILD_FRACTION below the bound: a trim moves every vector (the index is rebuilt), and
            # trimming back to the bound exactly would rebuild it for every snippet a full bank adapts to.
            room = self.max_vectors // r  # whole snippets within the bound
            whole = numbers[order[: max(1, room - int(REBUILD_FRACTION * room))]]
            keep = np.flatnonzero(np.isin(groups, whole))
            self._snippets = len(whole)
            # Compacted in place: the buffers keep their capacity.
            m = len(keep)
            for buffer in (self._vectors, self._priorities, self._groups, self._regions):
                buffer[:m] = buffer[keep]
            self._n = m
            self._index = None  # positions moved
            self._indexed = 0

    def _refresh(self) -> None:
        recent = len(self.vectors) - self._indexed
        if self._index is None or recent > max(REBUILD_MIN, REBUILD_FRACTION * self._indexed):
            # A copy: the index must not see the buffer change under it.
            self._index = (
                NearestNeighbors(n_neighbors=1, algorithm="kd_tree").fit(self.vectors.copy())
                if self._n
                else None
            )
            self._indexed = self._n

    def distances(self, queries: np.ndarray, k: int = 1) -> np.ndarray:
        """`[m, d]` -> `[m]` mean Euclidean distance to the k nearest bank vectors. Raises `ValueError` when the
        bank is empty."""
        if not len(self.vectors):
            raise ValueError("the memory bank is empty")
        self._refresh()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.vectors))
        parts = []
        if self._index is not None and self._indexed:
            parts.append(self._index.kneighbors(queries, n_neighbors=min(k, self._indexed))[0])
        recent = self.vectors[self._indexed :]
        if len(recent):
            d2 = (queries**2).sum(1)[:, None] - 2.0 * queries @ recent.T + (recent**2).sum(1)[None, :]
            d = np.sqrt(np.maximum(d2, 0.0))
            parts.append(np.sort(d, axis=1)[:, :k])
        nearest = np.sort(np.concatenate(parts, axis=1), axis=1)[:, :k]
        return nearest.mean(axis=1)

    def state(self) -> dict[str, np.ndarray]:
        return {
            "vectors": self.vectors,
            "priorities": self.priorities,
            "groups": self.groups,
            "regions": self.regions,
            "added": np.array(self.added),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], max_vectors: int) -> MemoryBank:
        vectors = np.asarray(state["vectors"], np.float32)
        bank = cls(vectors.shape[1], max_vectors)
        bank._set(vectors, state["priorities"], state["groups"], state["regions"])
        bank.added = int(state["added"])
        bank._snippets = len(np.unique(bank.groups))
        return bank
