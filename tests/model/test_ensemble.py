"""The seed ensemble: its outputs are its members' means, it scripts, and checkpoints combine and load as one."""

import pytest
import torch

from model import RefineVAD, RefineVADConfig
from model.backbones.identity import BackboneIdentity
from model.checkpoint import (
    ENSEMBLE_FORMAT,
    FORMAT,
    combine_checkpoints,
    load_checkpoint,
    load_checkpoint_payload,
    save_checkpoint,
    write_checkpoint_payload,
)
from model.ensemble import RefineVADEnsemble

BACKBONE = BackboneIdentity(name="motion", architecture="flow-hog", weights="v1", dim=32)


def _members(config: RefineVADConfig, seeds: list[int]) -> list[RefineVAD]:
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        members.append(RefineVAD(config).eval())
    return members


def _ensemble_of(config: RefineVADConfig, members: list[RefineVAD]) -> RefineVADEnsemble:
    ensemble = RefineVADEnsemble(config, len(members)).eval()
    for slot, member in zip(ensemble.members, members, strict=True):
        slot.load_state_dict(member.state_dict())
    return ensemble


def test_outputs_are_the_members_means(small_config: RefineVADConfig) -> None:
    members = _members(small_config, [1, 2, 3])
    ensemble = _ensemble_of(small_config, members)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        outs = [m(x) for m in members]
        out = ensemble(x)
    mean = torch.stack([o.scores for o in outs]).mean(0)
    assert torch.allclose(out.scores, mean, atol=1e-6)
    assert torch.allclose(torch.sigmoid(out.logits), out.scores, atol=1e-6)
    for name in ("category_probs", "category_weights", "rough_logits", "category_logits"):
        expected = torch.stack([getattr(o, name) for o in outs]).mean(0)
        assert torch.allclose(getattr(out, name), expected, atol=1e-6), name
    assert torch.allclose(out.category_weights.sum(-1), torch.ones(2), atol=1e-5)
    # Members that disagree completely: a mean probability of 1/2, log-odds 0, no infinities.
    with torch.no_grad():
        for member, bias in zip(ensemble.members, (200.0, -200.0, 200.0), strict=True):
            member.core.scorer.bias.fill_(bias)
        extreme = ensemble(x)
    assert torch.allclose(extreme.scores, torch.full_like(extreme.scores, 2 / 3), atol=1e-4)
    assert torch.allclose(
        extreme.logits, torch.full_like(extreme.logits, torch.log(torch.tensor(2.0))), atol=1e-3
    )


def test_an_ensemble_needs_two_members(small_config: RefineVADConfig) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        RefineVADEnsemble(small_config, 1)


def test_torchscript_matches_eager(small_config: RefineVADConfig) -> None:
    ensemble = _ensemble_of(small_config, _members(small_config, [4, 5]))
    scripted = torch.jit.script(ensemble)
    x = torch.randn(1, 12, 32)
    with torch.no_grad():
        eager, script = ensemble(x), scripted(x)
    for name in ("scores", "logits", "category_probs", "category_weights"):
        assert torch.allclose(getattr(eager, name), getattr(script, name), atol=1e-5), name


def test_combined_checkpoints_load_as_the_members_ensemble(tmp_path, small_config: RefineVADConfig) -> None:
    members = _members(small_config, [42, 43, 44])
    paths = [
        save_checkpoint(
            tmp_path / f"seed{seed}.pt",
            member,
            BACKBONE,
            {"trained": True, "seed": seed, "metrics": {"auc": seed / 100}, "train_config": {"seed": seed}},
        )
        for seed, member in zip((42, 43, 44), members, strict=True)
    ]
    out = combine_checkpoints(paths, tmp_path / "ensemble.pt", {"description": "three seeds"})
    # Its own format tag: code that knows only single heads refuses it by name.
    assert load_checkpoint_payload(paths[0])["format"] == FORMAT
    assert load_checkpoint_payload(out)["format"] == ENSEMBLE_FORMAT
    loaded = load_checkpoint(out)
    assert isinstance(loaded.model, RefineVADEnsemble) and len(loaded.model.members) == 3
    assert loaded.trained and loaded.config == small_config and loaded.backbone == BACKBONE
    info = loaded.metadata["ensemble"]
    assert info["seeds"] == [42, 43, 44] and info["members"] == 3
    assert [m["auc"] for m in info["member_metrics"]] == [0.42, 0.43, 0.44]
    assert "seed" not in loaded.metadata and "seed" not in loaded.metadata["train_config"]
    assert loaded.metadata["description"] == "three seeds"
    x = torch.randn(1, 7, 32)
    with torch.no_grad():
        expected = torch.stack([m(x).scores for m in members]).mean(0)
        assert torch.allclose(loaded.model(x).scores, expected, atol=1e-6)
    # Saved again as is, it keeps being an ensemble.
    again = load_checkpoint(save_checkpoint(tmp_path / "again.pt", loaded.model, BACKBONE, loaded.metadata))
    assert isinstance(again.model, RefineVADEnsemble) and len(again.model.members) == 3


def test_combining_refuses_what_is_not_one_model_trained_with_several_seeds(
    tmp_path, small_config: RefineVADConfig
) -> None:
    a, b = _members(small_config, [1, 2])
    trained = {"trained": True}
    pa = save_checkpoint(tmp_path / "a.pt", a, BACKBONE, trained)
    pb = save_checkpoint(tmp_path / "b.pt", b, BACKBONE, trained)
    with pytest.raises(ValueError, match="at least 2"):
        combine_checkpoints([pa], tmp_path / "e.pt")
    untrained = save_checkpoint(tmp_path / "u.pt", b, BACKBONE, {"trained": False})
    with pytest.raises(ValueError, match="untrained"):
        combine_checkpoints([pa, untrained], tmp_path / "e.pt")
    other = small_config.model_copy(update={"dropout": 0.5})
    po = save_checkpoint(tmp_path / "o.pt", RefineVAD(other), BACKBONE, trained)
    with pytest.raises(ValueError, match="config"):
        combine_checkpoints([pa, po], tmp_path / "e.pt")
    moved = BACKBONE.model_copy(update={"weights": "v2"})
    pm = save_checkpoint(tmp_path / "m.pt", b, moved, trained)
    with pytest.raises(ValueError, match="backbone"):
        combine_checkpoints([pa, pm], tmp_path / "e.pt")
    ensemble = combine_checkpoints([pa, pb], tmp_path / "e.pt")
    with pytest.raises(ValueError, match="already an ensemble"):
        combine_checkpoints([ensemble, pa], tmp_path / "e2.pt")
    assert not (tmp_path / "e2.pt").exists()


def test_members_written_with_and_without_a_defaulted_config_key_combine(
    tmp_path, small_config: RefineVADConfig
) -> None:
    # A member whose stored config spells out a default (`attention_window: null`, as files of an interim
    # build did) is the same model as one that leaves it out; a different window is not.
    windowed = small_config.model_copy(update={"attention_window": 2})
    heads = {
        "a": _members(small_config, [1])[0],
        "b": _members(small_config, [2])[0],
        "w": RefineVAD(windowed),
    }
    pa, pb, pw = (
        save_checkpoint(tmp_path / f"{n}.pt", m, BACKBONE, {"trained": True}) for n, m in heads.items()
    )
    assert "attention_window" not in load_checkpoint_payload(pa)["config"]
    assert load_checkpoint_payload(pw)["config"]["attention_window"] == 2
    spelled = load_checkpoint_payload(pb)
    spelled["config"]["attention_window"] = None
    write_checkpoint_payload(spelled, pb)
    loaded = load_checkpoint(combine_checkpoints([pa, pb], tmp_path / "e.pt"))
    assert loaded.config == small_config and loaded.config.attention_window is None
    assert load_checkpoint(pw).model.motar.transformer.window == 2
    with pytest.raises(ValueError, match="config"):
        combine_checkpoints([pa, pw], tmp_path / "e2.pt")
