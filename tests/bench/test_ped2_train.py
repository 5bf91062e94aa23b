"""The seed-ensemble rows of the Ped2 cross-validation: the seeds' scores of the same held-out clips averaged."""

from __future__ import annotations

import pytest

from bench.ped2_train import ensemble_average


def test_the_seeds_scores_of_each_clip_are_averaged() -> None:
    seed_a = [{"name": "c1", "label": 1, "snippets": [0.2, 0.4], "live_snippets": [0.0, 0.2]}]
    seed_b = [{"name": "c1", "label": 1, "snippets": [0.6, 0.8], "live_snippets": [1.0, 0.4]}]
    (averaged,) = ensemble_average([seed_a, seed_b])
    assert averaged["name"] == "c1" and averaged["label"] == 1
    assert averaged["snippets"] == pytest.approx([0.4, 0.6])
    assert averaged["live_snippets"] == pytest.approx([0.5, 0.3])


def test_entries_of_different_clips_are_refused() -> None:
    seed_a = [{"name": "c1", "snippets": [0.2], "live_snippets": [0.2]}]
    seed_b = [{"name": "c2", "snippets": [0.6], "live_snippets": [0.6]}]
    with pytest.raises(ValueError, match="same clips"):
        ensemble_average([seed_a, seed_b])
    spliced_a = [{"labels": [0, 1], "snippets": [0.1, 0.9], "live_snippets": [0.1, 0.9]}]
    spliced_b = [{"labels": [1, 0], "snippets": [0.9, 0.1], "live_snippets": [0.9, 0.1]}]
    with pytest.raises(ValueError, match="same clips"):
        ensemble_average([spliced_a, spliced_b])
