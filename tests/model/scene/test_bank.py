"""MemoryBank: its bound, determinism, pinned snippets and exact distances."""

from __future__ import annotations

import numpy as np
import pytest

from model.scene.bank import MemoryBank


def snippets(n: int, r: int = 4, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, r, d)).astype(np.float32)


def test_bottom_k_bound_and_uniform_sample() -> None:
    bank = MemoryBank(3, max_vectors=40)
    for i in range(50):
        bank.add(snippets(4, seed=i))
    assert len(bank) <= 40 and bank.snippets == 10 and bank.added == 200
    kept = np.unique(bank.groups)
    # A uniform sample of all 200 snippets, not the first or the last ones.
    assert kept.min() < 100 < kept.max()
    used = sum(a.nbytes for a in (bank.vectors, bank.priorities, bank.groups, bank.regions))
    # Spare capacity is counted, and bounded by the bound plus one add (64 vectors at least).
    per_vector = used // len(bank)
    assert used <= bank.nbytes <= max(64, 40 + 16) * per_vector


def test_adding_a_snippet_copies_only_its_vectors() -> None:
    bank = MemoryBank(3, max_vectors=100_000)
    bank.add(snippets(1000, seed=1))
    bank.add(snippets(1, seed=9))  # the first growth doubles the capacity
    buffer = bank._vectors
    for i in range(20):
        bank.add(snippets(1, seed=10 + i))
    # No reallocation while there is room: the bank is not copied per snippet.
    assert bank._vectors is buffer and len(bank) == 4084 and bank.snippets == 1021
    np.testing.assert_array_equal(bank.vectors[-4:], snippets(1, seed=29)[0])
    with pytest.raises(ValueError):
        bank.vectors[0, 0] = 1.0  # a read-only view


def test_same_input_order_gives_the_same_bank() -> None:
    def build() -> MemoryBank:
        bank = MemoryBank(3, max_vectors=24)
        for i in range(20):
            bank.add(snippets(3, seed=i))
        return bank

    a, b = build(), build()
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.groups, b.groups)


def test_pinned_snippets_are_never_dropped() -> None:
    bank = MemoryBank(3, max_vectors=16)
    pinned = snippets(2, seed=99) + 50.0
    bank.add(snippets(3, seed=1))
    bank.add(pinned, pinned=True)
    for i in range(30):
        bank.add(snippets(3, seed=100 + i))
    assert len(bank) <= 16
    kept = bank.vectors[bank.priorities == 0]
    np.testing.assert_array_equal(np.sort(kept, axis=0), np.sort(pinned.reshape(-1, 3), axis=0))


@pytest.mark.parametrize("k", [1, 3])
def test_distances_match_brute_force(k: int) -> None:
    bank = MemoryBank(3, max_vectors=10_000)
    bank.add(snippets(300, seed=3))  # indexed part
    bank._refresh()
    bank.add(snippets(5, seed=4))  # recent part, searched exactly
    queries = np.random.default_rng(5).normal(size=(50, 3)).astype(np.float32)
    brute = np.linalg.norm(queries[:, None] - bank.vectors[None], axis=-1)
    expected = np.sort(brute, axis=1)[:, :k].mean(axis=1)
    np.testing.assert_allclose(bank.distances(queries, k), expected, rtol=1e-5, atol=1e-5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="max_vectors"):
        MemoryBank(3, max_vectors=0)
    bank = MemoryBank(3, max_vectors=10)
    with pytest.raises(ValueError, match="empty"):
        bank.distances(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[S, R, 3\]"):
        bank.add(np.zeros((2, 4), np.float32))


def test_state_round_trip() -> None:
    bank = MemoryBank(3, max_vectors=100)
    bank.add(snippets(6, seed=8))
    copy = MemoryBank.from_state(bank.state(), 100)
    q = np.random.default_rng(9).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(copy.distances(q, 2), bank.distances(q, 2))
    assert copy.added == bank.added
