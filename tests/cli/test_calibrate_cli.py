"""`refinevad calibrate`: a checkpoint trained without a scene calibration gets one, weights untouched."""

from __future__ import annotations

import json

import pytest
import torch

from cli.main import main
from model.checkpoint import load_checkpoint, load_checkpoint_payload
from model.config import RefineVADConfig
from model.data.datasets import FeatureSet
from model.data.synthetic import SyntheticGenerator, SyntheticSpec
from model.scene_familiarity import METADATA_KEY, SceneFamiliarity
from model.training import TrainConfig, train


@pytest.fixture(scope="module")
def uncalibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate")
    store, _ = SyntheticGenerator(SyntheticSpec(dim=16)).write_store(root / "train", 8, 8, seed=1, prefix="t")
    features = FeatureSet.from_store(store)
    model = RefineVADConfig(
        feature_dim=16,
        category_names=list(features.category_names),
        transformer_ff=32,
        proj_dim=32,
        emb_dim=8,
        classifier_hidden=16,
    )
    config = TrainConfig(epochs=1, batch_size=8, patience=None, threads=1, scene_margin=None)
    result = train(features, root / "run", config, model, progress=False)
    return root / "train", result.best_checkpoint


def test_calibrate_adds_the_check_and_keeps_the_weights(uncalibrated, tmp_path, capsys) -> None:
    store, checkpoint = uncalibrated
    assert METADATA_KEY not in load_checkpoint(checkpoint).metadata
    out = tmp_path / "calibrated.pt"
    code = main(
        [
            "calibrate",
            "--checkpoint",
            str(checkpoint),
            "--features",
            str(store),
            "--out",
            str(out),
            "--margin",
            "5",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["training_videos"] == 16 and summary["threshold"] == pytest.approx(
        5 * summary["largest_training_distance"]
    )
    before, after = load_checkpoint_payload(checkpoint), load_checkpoint_payload(out)
    assert before["state_dict"].keys() == after["state_dict"].keys()
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert after["metadata"] == before["metadata"] | {METADATA_KEY: after["metadata"][METADATA_KEY]}
    scene = SceneFamiliarity.from_metadata(load_checkpoint(out).metadata)
    assert scene is not None and scene.threshold == pytest.approx(summary["threshold"])
    assert METADATA_KEY not in load_checkpoint(checkpoint).metadata  # --out leaves the original alone


def test_calibrate_refuses_features_of_another_backbone(uncalibrated, tmp_path) -> None:
    _, checkpoint = uncalibrated
    other, _ = SyntheticGenerator(SyntheticSpec(dim=24)).write_store(
        tmp_path / "other", 4, 4, seed=2, prefix="o"
    )
    with pytest.raises(SystemExit, match="not the checkpoint's"):
        main(["calibrate", "--checkpoint", str(checkpoint), "--features", str(other.root), "--no-progress"])
    assert METADATA_KEY not in load_checkpoint(checkpoint).metadata
