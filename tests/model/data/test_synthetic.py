import numpy as np

from model.data.synthetic import SyntheticGenerator, SyntheticSpec
from model.evaluation.ground_truth import NORMAL


def test_generator_is_seeded_and_labels_anomalies():
    gen = SyntheticGenerator(SyntheticSpec(dim=16))
    a = gen.videos(3, 6, seed=5)
    b = gen.videos(3, 6, seed=5)
    assert [v.name for v in a] == [v.name for v in b]
    assert all(np.array_equal(x.features, y.features) for x, y in zip(a, b, strict=True))
    for v in a:
        assert v.features.dtype == np.float32 and v.features.shape[1] == 16
        assert (v.snippet_labels.sum() > 0) == (v.category is not None)
    assert {v.category for v in a if v.category} == {"Fire", "Fight", "Theft"}


def test_anomalous_snippets_carry_their_category_pattern():
    spec = SyntheticSpec(dim=64, signal=1.0)
    gen = SyntheticGenerator(spec)
    videos = gen.videos(0, 30, seed=0)
    pattern = {
        c: spec.shared_weight * gen.shared + (1 - spec.shared_weight) * gen.directions[i]
        for i, c in enumerate(spec.category_names)
    }
    for v in videos:
        inside = v.features[v.snippet_labels == 1].mean(0)
        outside = v.features[v.snippet_labels == 0].mean(0)
        diff = inside - outside
        own = float(diff @ pattern[v.category])
        others = [float(diff @ p) for c, p in pattern.items() if c != v.category]
        assert own > max(others)


def test_write_store_and_frame_labels(tmp_path):
    gen = SyntheticGenerator(SyntheticSpec(dim=8))
    store, labels = gen.write_store(tmp_path, 2, 3, seed=1)
    assert len(store) == 5 and store.backbone.dim == 8
    truth = {t.name: t for t in labels.to_truth()}
    for entry in store:
        assert len(labels.frames[entry.name]) == entry.num_frames == 16 * entry.num_snippets
        assert (truth[entry.name].category == NORMAL) == (entry.label == 0)
        if entry.label:
            assert truth[entry.name].category == entry.category
