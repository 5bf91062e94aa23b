import numpy as np
import pytest

from model.backbones.identity import BackboneIdentity
from model.data.feature_store import FeatureStore, VideoEntry

IDENTITY = BackboneIdentity(name="motion", architecture="grid", weights="v1", dim=4)


def entry(name: str, label: int = 0, category: str | None = None) -> VideoEntry:
    return VideoEntry(name=name, label=label, category=category, num_frames=32, fps=10.0, num_snippets=0)


def test_add_reopen_and_load(tmp_path) -> None:
    store = FeatureStore.create_or_open(tmp_path, IDENTITY)
    store.add(entry("a"), np.ones((2, 4)))
    store.add(entry("b", 1, "Biking"), np.zeros((3, 4)))
    reopened = FeatureStore.open(tmp_path)
    assert [v.name for v in reopened] == ["a", "b"] and "b" in reopened
    assert reopened.entry("b").num_snippets == 3 and reopened.manifest.category_names == ["Biking"]
    assert reopened.load("a").dtype == np.float32 and reopened.load("a").shape == (2, 4)
    reopened.add(entry("a"), np.full((5, 4), 2.0))  # replacing keeps one entry
    assert len(FeatureStore.open(tmp_path)) == 2 and FeatureStore.open(tmp_path).entry("a").num_snippets == 5


def test_refuses_wrong_shapes_names_and_other_backbones(tmp_path) -> None:
    store = FeatureStore.create_or_open(tmp_path, IDENTITY)
    with pytest.raises(ValueError, match="expected"):
        store.add(entry("a"), np.ones((2, 5)))
    for bad in ("../escape", "a/b", "", ".."):
        with pytest.raises(ValueError):
            store.add(entry(bad), np.ones((1, 4)))
    other = IDENTITY.model_copy(update={"weights": "v2"})
    with pytest.raises(ValueError, match="made differently"):
        FeatureStore.create_or_open(tmp_path, other)
    with pytest.raises(KeyError):
        store.load("missing")
    with pytest.raises(FileNotFoundError):
        FeatureStore.open(tmp_path / "nowhere")
    assert not list(tmp_path.glob("**/*.tmp"))
