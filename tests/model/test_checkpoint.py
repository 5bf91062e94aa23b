import pytest
import torch

from model import RefineVAD, RefineVADConfig
from model.backbones.identity import BackboneIdentity
from model.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_keeps_weights_config_backbone_and_metadata(
    tmp_path, small_config: RefineVADConfig
) -> None:
    model = RefineVAD(small_config).eval()
    backbone = BackboneIdentity(name="motion", architecture="flow-hog", weights="v1", dim=32)
    path = save_checkpoint(tmp_path / "head.pt", model, backbone, {"trained": True, "seed": 3})
    loaded = load_checkpoint(path)
    assert loaded.config == small_config
    assert loaded.backbone == backbone and loaded.trained and loaded.metadata["seed"] == 3
    assert loaded.sha256 and len(loaded.sha256) == 64
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        assert torch.equal(model(x).scores, loaded.model(x).scores)


def test_backbone_dim_mismatch_and_identity_mismatch(tmp_path, small_config: RefineVADConfig) -> None:
    model = RefineVAD(small_config)
    wrong = BackboneIdentity(name="clip", architecture="ViT-B-16", weights="openai", dim=512)
    with pytest.raises(ValueError, match="512"):
        save_checkpoint(tmp_path / "x.pt", model, wrong)
    a = BackboneIdentity(name="motion", architecture="flow-hog", weights="v1", dim=32)
    assert a.mismatch(a) is None
    assert "mismatch" in a.mismatch(a.model_copy(update={"weights": "v2"}))


def test_foreign_and_missing_files_fail_clearly(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable RefineVAD checkpoint"):
        load_checkpoint(junk)
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a RefineVAD checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
