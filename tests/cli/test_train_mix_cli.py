"""`refinevad train --features A B`: datasets extracted into separate stores train as one set (synthetic
features, through the real CLI entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from model.checkpoint import load_checkpoint_payload
from model.data.datasets import FeatureSet
from model.data.feature_store import FeatureStore
from model.data.synthetic import SyntheticGenerator, SyntheticSpec

MODEL = json.dumps({"transformer_ff": 64, "proj_dim": 64, "emb_dim": 16, "classifier_hidden": 32})
TRAIN = json.dumps({"threads": 1, "val_fraction": 0.25})


def _store(root: Path, categories: list[str], prefix: str, dim: int = 16) -> FeatureStore:
    store, _ = SyntheticGenerator(SyntheticSpec(dim=dim, category_names=categories)).write_store(
        root, 6, 6, seed=len(prefix), prefix=prefix
    )
    return store


def test_train_on_two_stores_uses_every_video_and_the_union_of_categories(tmp_path: Path, capsys) -> None:
    a = _store(tmp_path / "walkway", ["Biking", "Vehicle"], "walkway")
    b = _store(tmp_path / "street", ["Fighting"], "street")
    features = FeatureSet.from_stores([a, b])
    assert len(features) == len(a) + len(b) == 24
    assert features.category_names == ("Biking", "Fighting", "Vehicle")
    argv = ["train", "--features", str(a.root), str(b.root), "--out", str(tmp_path / "run"), "--epochs", "2"]
    assert (
        main([*argv, "--batch-size", "8", "--model-config", MODEL, "--train-config", TRAIN, "--no-progress"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 2
    payload = load_checkpoint_payload(tmp_path / "run" / "best.pt")
    assert payload["config"]["category_names"] == ["Biking", "Fighting", "Vehicle"]


def test_stores_that_do_not_go_together_are_refused(tmp_path: Path) -> None:
    a = _store(tmp_path / "a", ["Biking"], "same")
    clash = _store(tmp_path / "b", ["Biking"], "same")
    with pytest.raises(ValueError, match=r"video 'same_.*' is in both"):
        FeatureSet.from_stores([a, clash])
    wide = _store(tmp_path / "c", ["Biking"], "wide", dim=8)
    with pytest.raises(ValueError, match="holds other features than"):
        FeatureSet.from_stores([a, wide])
    argv = ["train", "--features", str(a.root), str(wide.root), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match="cannot train on these stores together"):
        main(argv)
