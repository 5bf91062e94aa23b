import json

import pytest

from cli.main import main
from model import RefineVAD, RefineVADConfig
from model.backbones.registry import BackboneConfig, load_backbone
from model.checkpoint import save_checkpoint
from tests.shared_data import PED2_ROOT


@pytest.mark.integration
def test_evaluate_ped2_from_the_dataset_folder(tmp_path, capsys) -> None:
    identity = load_backbone(BackboneConfig(name="motion"), "cpu").identity
    config = RefineVADConfig(
        feature_dim=identity.dim, category_names=["Biking", "Skateboarding", "Vehicle"], transformer_ff=64
    )
    checkpoint = save_checkpoint(tmp_path / "head.pt", RefineVAD(config), identity, {"trained": False})
    args = ["evaluate", str(checkpoint), "--dataset", "ped2", "--root", str(PED2_ROOT), "--split", "test"]
    assert main([*args, "--json", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    # Ped2 test split: 6 anomalous testing clips + 4 normal clips held out of training, 1,590 frames.
    assert metrics["num_videos"] == 10 and metrics["num_frames"] == 1590
    assert 0.0 <= metrics["auc"] <= 1.0 and set(metrics["map_iou"]) == {
        "0.1",
        "0.2",
        "0.3",
        "0.4",
        "0.5",
        "avg",
    }
    assert metrics["trained"] is False


def test_evaluate_ped2_refuses_the_training_split(tmp_path) -> None:
    with pytest.raises(SystemExit, match="frame labels"):
        main(["evaluate", "--dataset", "ped2", "--root", str(PED2_ROOT), "--split", "train"])


@pytest.mark.integration
def test_evaluate_ped2_shipped_default_without_a_checkpoint(tmp_path, capsys) -> None:
    """The command the model card quotes: the shipped default on the test split, features made by the
    backbone its identity records (two-stream, EfficientNet-Lite0 weights from the installed package)."""
    args = ["evaluate", "--dataset", "ped2", "--root", str(PED2_ROOT), "--split", "test", "--json"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["trained"] is True and metrics["num_videos"] == 10
    assert metrics["backbone"].startswith("two_stream:")
    # The card's shipped figures (the seed ensemble 42-46), re-measured end to end from the frames.
    assert metrics["auc"] == pytest.approx(0.960, abs=0.005)
    assert metrics["ano_auc"] == pytest.approx(0.869, abs=0.005)
