"""`refinevad ensemble`: trained checkpoints of one config become one ensemble checkpoint; bad input is refused."""

from __future__ import annotations

import json

import pytest
import torch

from cli.main import main
from model import RefineVAD, RefineVADConfig
from model.backbones.identity import BackboneIdentity
from model.checkpoint import load_checkpoint, save_checkpoint
from model.ensemble import RefineVADEnsemble

BACKBONE = BackboneIdentity(name="motion", architecture="flow-hog", weights="v1", dim=16)
CONFIG = RefineVADConfig(feature_dim=16, category_names=["A", "B"], transformer_ff=32, proj_dim=16, emb_dim=8)


def test_members_become_one_checkpoint(tmp_path, capsys) -> None:
    paths = []
    for seed in (7, 8):
        torch.manual_seed(seed)
        paths.append(
            save_checkpoint(
                tmp_path / f"s{seed}.pt", RefineVAD(CONFIG), BACKBONE, {"trained": True, "seed": seed}
            )
        )
    assert main(["ensemble", *map(str, paths), "--out", str(tmp_path / "e.pt")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["members"] == 2 and summary["seeds"] == [7, 8]
    loaded = load_checkpoint(tmp_path / "e.pt")
    assert isinstance(loaded.model, RefineVADEnsemble) and loaded.sha256 == summary["sha256"]


def test_bad_input_is_refused_with_a_clear_message(tmp_path) -> None:
    one = save_checkpoint(tmp_path / "one.pt", RefineVAD(CONFIG), BACKBONE, {"trained": True})
    with pytest.raises(SystemExit, match="at least 2"):
        main(["ensemble", str(one), "--out", str(tmp_path / "e.pt")])
    with pytest.raises(SystemExit, match="not found"):
        main(["ensemble", str(one), str(tmp_path / "missing.pt"), "--out", str(tmp_path / "e.pt")])
    assert not (tmp_path / "e.pt").exists()
