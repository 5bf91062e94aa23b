import numpy as np
import pytest

from model.data.datasets import (
    BalancedBatches,
    FeatureSet,
    VideoRecord,
    resample_to_bins,
    split_train_validation,
)
from model.data.synthetic import SyntheticGenerator, SyntheticSpec


def test_resample_means_equal_bins():
    x = np.arange(8, dtype=np.float32)[:, None].repeat(2, axis=1)
    out = resample_to_bins(x, 4)
    assert out[:, 0].tolist() == [0.5, 2.5, 4.5, 6.5]
    assert resample_to_bins(x, 8).tolist() == x.tolist()
    # Shorter than T: bins repeat snippets.
    short = resample_to_bins(np.array([[1.0], [3.0]], np.float32), 4)
    assert short[:, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    odd = resample_to_bins(np.arange(10, dtype=np.float32)[:, None], 3)  # edges 0, 3, 6, 10
    assert odd[:, 0].tolist() == pytest.approx([1.0, 4.0, 7.5])
    with pytest.raises(ValueError):
        resample_to_bins(np.zeros((0, 3)), 4)


def _records(n_normal, categories):
    recs = [VideoRecord(f"n{i}", 0, None, ()) for i in range(n_normal)]
    recs += [VideoRecord(f"a{i}", 1, c, ()) for i, c in enumerate(categories)]
    return recs


def test_validation_split_is_stratified_and_seeded():
    recs = _records(50, ["Fire"] * 30 + ["Theft"] * 20)
    train, val = split_train_validation(recs, 0.2, seed=3)
    assert len(val) == 10 + 6 + 4 and len(train) + len(val) == 100
    assert {r.name for r in train}.isdisjoint(r.name for r in val)
    assert sum(r.category == "Theft" for r in val) == 4
    again = split_train_validation(recs, 0.2, seed=3)[1]
    assert [r.name for r in again] == [r.name for r in val]
    assert [r.name for r in split_train_validation(recs, 0.2, seed=4)[1]] != [r.name for r in val]
    tiny_train, tiny_val = split_train_validation(_records(3, ["Fire"] * 3), 0.1, seed=0)
    assert {r.label for r in tiny_val} == {0, 1} and {r.label for r in tiny_train} == {0, 1}


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    gen = SyntheticGenerator(SyntheticSpec(dim=8, min_snippets=5, max_snippets=40))
    store, _ = gen.write_store(tmp_path_factory.mktemp("syn"), 10, 6, seed=0)
    return FeatureSet.from_store(store)


def test_balanced_batches_are_balanced_deterministic_and_cover_videos(synthetic_set):
    fs = synthetic_set
    batches = BalancedBatches(fs, fs.records, num_segments=16, batch_size=4, seed=1)
    assert len(batches) == 5  # 10 normal videos / 2 per batch
    epoch0 = list(batches.epoch(0))
    for batch in epoch0:
        assert batch.features.shape == (4, 16, 8)
        assert batch.labels.tolist() == [0.0, 0.0, 1.0, 1.0]
        assert (batch.categories[:2] == -1).all() and (batch.categories[2:] >= 0).all()
    normal_seen = {n for b in epoch0 for n in b.names[:2]}
    assert len(normal_seen) == 10  # the larger group is walked through once
    same = list(BalancedBatches(fs, fs.records, 16, 4, seed=1).epoch(0))
    assert [b.names for b in same] == [b.names for b in epoch0]
    assert all(np.array_equal(a.features, b.features) for a, b in zip(same, epoch0, strict=True))
    assert [b.names for b in batches.epoch(1)] != [b.names for b in epoch0]


def test_crop_sampling_draws_all_crops(tmp_path):
    crops = []
    for k in range(3):
        path = tmp_path / f"v__{k}.npy"
        np.save(path, np.full((4, 2), float(k), np.float32))
        crops.append(path)
    normal = tmp_path / "n.npy"
    np.save(normal, np.zeros((4, 2), np.float32))
    from model.backbones.identity import BackboneIdentity

    fs = FeatureSet(
        (VideoRecord("v", 1, "Fire", tuple(crops)), VideoRecord("n", 0, None, (normal,))),
        ("Fire",),
        2,
        BackboneIdentity(name="t", architecture="t", weights="t", dim=2),
        "test",
    )
    batches = BalancedBatches(fs, fs.records, 4, 2, seed=0)
    seen = {float(next(iter(batches.epoch(e))).features[1, 0, 0]) for e in range(12)}
    assert seen == {0.0, 1.0, 2.0}
    fixed = BalancedBatches(fs, fs.records, 4, 2, seed=0, sample_crops=False)
    assert {float(next(iter(fixed.epoch(e))).features[1, 0, 0]) for e in range(5)} == {0.0}


def test_batches_need_both_labels(synthetic_set):
    normal_only = [r for r in synthetic_set.records if not r.label]
    with pytest.raises(ValueError, match="normal and anomalous"):
        BalancedBatches(synthetic_set, normal_only, 8, 4, seed=0)


def test_splicing_puts_a_normal_video_beside_anomalous_ones_and_marks_it(tmp_path):
    from model.backbones.identity import BackboneIdentity

    # Normal videos are all 0, anomalous all 1, so every spliced snippet shows where it came from.
    normal = [tmp_path / f"n{i}.npy" for i in range(3)]
    anomalous = [tmp_path / f"a{i}.npy" for i in range(2)]
    for path in normal:
        np.save(path, np.zeros((10, 2), np.float32))
    for path in anomalous:
        np.save(path, np.ones((7, 2), np.float32))
    records = tuple(VideoRecord(p.stem, 0, None, (p,)) for p in normal) + tuple(
        VideoRecord(p.stem, 1, "Fire", (p,)) for p in anomalous
    )
    identity = BackboneIdentity(name="t", architecture="t", weights="t", dim=2)
    fs = FeatureSet(records, ("Fire",), 2, identity, "test")
    plain = next(iter(BalancedBatches(fs, fs.records, 12, 4, seed=0).epoch(0)))
    assert plain.known_normal is None

    batches = BalancedBatches(fs, fs.records, 12, 4, seed=0, splice_prob=1.0)
    spliced_before = spliced_after = 0
    for epoch in range(10):
        for batch in batches.epoch(epoch):
            assert batch.features.shape == (4, 12, 2) and batch.known_normal.shape == (4, 12)
            assert batch.labels.tolist() == [0.0, 0.0, 1.0, 1.0]  # a spliced video keeps its anomalous label
            assert not batch.known_normal[:2].any()  # normal videos are never spliced
            for row, mask in zip(batch.features[2:, :, 0], batch.known_normal[2:], strict=True):
                assert mask.tolist() == (row == 0).tolist()  # the mask is exactly the normal part
                assert 3 <= int(mask.sum()) <= 6  # a quarter to a half of the bins
                assert bool(mask[0]) != bool(mask[-1])  # one contiguous part, at either end
                spliced_before += bool(mask[0])
                spliced_after += bool(mask[-1])
    assert spliced_before and spliced_after
    none = BalancedBatches(fs, fs.records, 12, 4, seed=0, splice_prob=0.0)
    assert next(iter(none.epoch(0))).known_normal is None
    with pytest.raises(ValueError, match="splice_prob"):
        BalancedBatches(fs, fs.records, 12, 4, seed=0, splice_prob=1.5)
    with pytest.raises(ValueError, match="4 segments"):
        BalancedBatches(fs, fs.records, 3, 4, seed=0, splice_prob=0.5)
