"""End-to-end training on synthetic features: learning, validation-based selection, early stopping, resume."""

import itertools
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from model.checkpoint import load_checkpoint, load_checkpoint_payload
from model.config import RefineVADConfig
from model.data.datasets import FeatureSet, split_train_validation
from model.data.synthetic import SyntheticGenerator, SyntheticSpec
from model.evaluation.runner import evaluate_store
from model.losses import LossConfig
from model.refinevad import RefineVAD
from model.training import TrainConfig, _config_fingerprint, train, warmup_cosine


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    gen = SyntheticGenerator(SyntheticSpec(dim=32))
    train_store, _ = gen.write_store(root / "train", 60, 60, seed=1, prefix="train")
    test_store, test_labels = gen.write_store(root / "test", 20, 20, seed=2, prefix="test")
    return FeatureSet.from_store(train_store), test_store, test_labels


def small_model(features: FeatureSet, **switches) -> RefineVADConfig:
    return RefineVADConfig(
        feature_dim=features.feature_dim,
        category_names=list(features.category_names),
        transformer_ff=64,
        proj_dim=64,
        emb_dim=16,
        classifier_hidden=32,
        **switches,
    )


def small_train(**overrides) -> TrainConfig:
    return TrainConfig(
        **({"epochs": 15, "batch_size": 16, "patience": None, "threads": 1, "val_fraction": 0.15} | overrides)
    )


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, 4, 20, 0.1) for s in range(21)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))


@pytest.mark.integration
def test_full_model_learns_synthetic_anomalies_and_beats_chance(synthetic, tmp_path):
    features, test_store, test_labels = synthetic
    result = train(features, tmp_path, small_train(), small_model(features), progress=False)
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 15 and history[-1]["train_total"] < history[0]["train_total"]
    metrics = evaluate_store(result.best_checkpoint, test_store, test_labels, scores_dir=tmp_path / "scores")
    assert metrics["num_videos"] == 40
    # On this small synthetic set the full model separates videos well but localises less sharply than the base
    # model (its temporal Transformer and category injection spread video-level evidence over all snippets), so
    # the frame AUC bar is "clearly above chance"; the base model below is held to > 0.9.
    assert metrics["auc"] > 0.7, metrics
    scores_dir = tmp_path / "scores"
    video_scores = [np.load(scores_dir / f"{e.name}.npy").max() for e in test_store]
    assert roc_auc_score([e.label for e in test_store], video_scores) > 0.8
    ck = load_checkpoint(result.best_checkpoint)
    assert ck.trained and ck.backbone == features.backbone
    assert ck.config.category_names == list(features.category_names)
    assert ck.metadata["epoch"] == result.best_epoch
    assert ck.metadata["metrics"]["validation"]["val_auc"] == result.best_metrics["val_auc"]
    # The best epoch is the best on validation (ties broken by validation loss).
    best = max(history, key=lambda h: (round(h["val_auc"], 4), -h["val_loss"]))
    assert result.best_metrics["val_auc"] == pytest.approx(best["val_auc"], abs=1e-4)
    # Score folder: one score per snippet and a category distribution per video.
    entry = next(iter(test_store))
    assert np.load(tmp_path / "scores" / f"{entry.name}.npy").shape == (entry.num_snippets,)
    dist = np.load(tmp_path / "scores" / f"{entry.name}.categories.npy")
    assert dist.shape == (3,) and dist.sum() == pytest.approx(1.0, abs=1e-5)


def test_base_model_reaches_high_auc(synthetic, tmp_path):
    features, test_store, test_labels = synthetic
    base = small_model(features, use_motar=False, injection="none")
    config = small_train(epochs=8, loss=LossConfig(use_cat=False, use_gmm=False))
    result = train(features, tmp_path, config, base, progress=False)
    assert evaluate_store(result.best_checkpoint, test_store, test_labels)["auc"] > 0.9


def test_training_is_deterministic_under_a_seed(synthetic, tmp_path):
    features, _, _ = synthetic
    config = small_train(epochs=2)
    a = train(features, tmp_path / "a", config, small_model(features), progress=False)
    b = train(features, tmp_path / "b", config, small_model(features), progress=False)
    sa = load_checkpoint_payload(a.last_checkpoint)["state_dict"]
    sb = load_checkpoint_payload(b.last_checkpoint)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = train(features, tmp_path / "c", small_train(epochs=2, seed=7), small_model(features), progress=False)
    sc = load_checkpoint_payload(c.last_checkpoint)["state_dict"]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_continues_exactly(synthetic, tmp_path):
    features, _, _ = synthetic
    config = small_train(epochs=4)
    straight = train(features, tmp_path / "straight", config, small_model(features), progress=False)
    partial = train(
        features, tmp_path / "resumed", config, small_model(features), progress=False, stop_after_epochs=2
    )
    assert len(partial.history) == 2
    resumed = train(
        features, tmp_path / "resumed", config, small_model(features), progress=False, resume=True
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    s1 = load_checkpoint_payload(straight.last_checkpoint)["state_dict"]
    s2 = load_checkpoint_payload(resumed.last_checkpoint)["state_dict"]
    assert all(torch.allclose(s1[k], s2[k], atol=1e-6) for k in s1)
    assert resumed.best_epoch == straight.best_epoch
    with pytest.raises(ValueError, match="another configuration"):
        train(
            features, tmp_path / "resumed", small_train(epochs=4, lr=1e-4), small_model(features), resume=True
        )


def test_early_stopping(synthetic, tmp_path):
    features, _, _ = synthetic
    # An improvement must beat the best by more than min_delta: with a huge one, only epoch 1 counts.
    config = small_train(epochs=10, patience=2, min_delta=10.0)
    result = train(features, tmp_path, config, small_model(features), progress=False)
    assert result.stopped_early
    assert len(result.history) == 3 and result.best_epoch == 1


def test_mismatched_model_config_is_refused(synthetic, tmp_path):
    features, _, _ = synthetic
    with pytest.raises(ValueError, match="dim"):
        train(features, tmp_path, small_train(), RefineVADConfig(feature_dim=16, category_names=["Fire"]))


def test_input_standardisation_is_fitted_on_training_clips_and_stored(synthetic, tmp_path):
    features, _, _ = synthetic
    # Channels on very different scales, as in concatenated two-stream features.
    scale = np.geomspace(1e-3, 1e3, features.feature_dim).astype(np.float32)
    config = small_model(features, input_norm="standardize")
    result = train(features, tmp_path / "run", small_train(epochs=2), config, progress=False)
    loaded = load_checkpoint(result.best_checkpoint)
    norm = loaded.model.input_norm
    train_records, _ = split_train_validation(list(features.records), 0.15, TrainConfig().seed)
    x = np.concatenate([features.load(r) for r in train_records])
    assert torch.allclose(norm.mean, torch.from_numpy(x.mean(0)), atol=1e-5)
    assert torch.allclose(norm.std, torch.from_numpy(x.std(0, ddof=1)), rtol=1e-4)
    # Standardised inputs make the head blind to a per-channel rescaling of both its inputs and statistics.
    clip = torch.from_numpy(features.load(train_records[0]))[None]
    norm_scaled = type(norm)(features.feature_dim)
    norm_scaled.mean.copy_(norm.mean * torch.from_numpy(scale))
    norm_scaled.std.copy_(norm.std * torch.from_numpy(scale))
    assert torch.allclose(norm_scaled(clip * torch.from_numpy(scale)), norm(clip), atol=1e-4)


def test_splicing_and_the_spliced_validation_criterion(synthetic, tmp_path):
    features, _, _ = synthetic
    config = small_train(epochs=3, splice_prob=0.5, val_criterion="splice_auc")
    result = train(features, tmp_path, config, small_model(features), progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    for record in history:
        assert record["train_known_normal"] > 0  # spliced videos were trained on
        assert record["val_auc"] == record["val_splice_auc"]
        assert 0 <= record["val_splice_normal_mean"] <= 1
    assert result.best_metrics["val_auc"] == max(h["val_auc"] for h in history)
    plain = train(features, tmp_path / "plain", small_train(epochs=1), small_model(features), progress=False)
    assert "train_known_normal" not in plain.history[0] and "val_splice_auc" not in plain.history[0]


def test_checkpoints_carry_a_scene_calibration_fitted_on_every_training_video(synthetic, tmp_path):
    from model.scene_familiarity import METADATA_KEY, SceneCalibration

    features, _, _ = synthetic
    subset = features.subset(
        [r.name for r in features.records[:10]] + [r.name for r in features.records[-10:]]
    )
    result = train(subset, tmp_path / "on", small_train(epochs=1), small_model(subset), progress=False)
    for path in (result.best_checkpoint, result.last_checkpoint):
        calibration = SceneCalibration.model_validate(load_checkpoint(path).metadata[METADATA_KEY])
        # Validation videos are training videos too: every one of them is measured.
        assert sorted(calibration.training_clip_distances) == sorted(r.name for r in subset.records)
        assert calibration.margin == 10.0 and len(calibration.mean) == subset.feature_dim
    off = train(
        subset,
        tmp_path / "off",
        small_train(epochs=1, scene_margin=None),
        small_model(subset),
        progress=False,
    )
    assert METADATA_KEY not in load_checkpoint(off.best_checkpoint).metadata


def _params(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of a state dict (what SWA averages; buffers are not averaged)."""
    names = {name for name, _ in model.named_parameters()}
    return {k: v for k, v in state.items() if k in names}


def test_swa_averages_the_last_epochs_recomputes_batchnorm_and_resumes(synthetic, tmp_path):
    features, _, _ = synthetic
    config = small_train(epochs=4, swa_epochs=2)
    model_config = small_model(features, input_norm="standardize")
    reference = RefineVAD(model_config)
    # Interrupted after epoch 3 (the first averaged epoch): no swa.pt yet, and last.pt holds epoch 3's weights.
    partial = train(features, tmp_path / "run", config, model_config, progress=False, stop_after_epochs=3)
    assert partial.swa_checkpoint is None and not (tmp_path / "run" / "swa.pt").exists()
    epoch3 = _params(load_checkpoint_payload(partial.last_checkpoint)["state_dict"], reference)
    # Resumed to the end of the budget: the running average travels in last.pt's extra_state.
    resumed = train(features, tmp_path / "run", config, model_config, progress=False, resume=True)
    assert resumed.swa_checkpoint == tmp_path / "run" / "swa.pt"
    last = load_checkpoint_payload(resumed.last_checkpoint)["state_dict"]
    epoch4 = _params(last, reference)
    swa_payload = load_checkpoint_payload(resumed.swa_checkpoint)
    swa = swa_payload["state_dict"]
    for name in epoch3:
        assert torch.allclose(swa[name], (epoch3[name] + epoch4[name]) / 2, atol=1e-6), name
    assert not all(torch.equal(swa[k], last[k]) for k in epoch4)
    # The same run straight through writes the same average.
    straight = train(features, tmp_path / "straight", config, model_config, progress=False)
    swa_straight = load_checkpoint_payload(straight.swa_checkpoint)["state_dict"]
    assert all(torch.allclose(swa[k], swa_straight[k], atol=1e-6) for k in swa)
    # BatchNorm statistics were recomputed for the averaged weights over one pass of training batches.
    steps_per_epoch = int(last["core.projector.norm.num_batches_tracked"]) // 4  # last.pt counted 4 epochs
    assert int(swa["core.projector.norm.num_batches_tracked"]) == steps_per_epoch
    assert not torch.allclose(
        swa["core.projector.norm.running_mean"], last["core.projector.norm.running_mean"]
    )
    # The input standardisation (a buffer, not averaged) is the training run's.
    assert torch.equal(swa["input_norm.mean"], last["input_norm.mean"])
    metadata = swa_payload["metadata"]
    assert metadata["checkpoint_rule"] == "swa over the last 2 epochs"
    assert metadata["swa_epochs"] == [3, 4] and metadata["seed"] == config.seed and metadata["trained"]
    loaded = load_checkpoint(straight.swa_checkpoint)
    assert not loaded.model.training and loaded.backbone == features.backbone
    # No SWA, no swa.pt.
    assert (
        train(
            features, tmp_path / "plain", small_train(epochs=1), small_model(features), progress=False
        ).swa_checkpoint
        is None
    )


def test_swa_config_is_validated():
    assert small_train(epochs=4, swa_epochs=4).swa_epochs == 4
    with pytest.raises(ValueError, match="must not exceed epochs"):
        small_train(epochs=4, swa_epochs=5)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        small_train(epochs=4, swa_epochs=0)
    with pytest.raises(ValueError, match="patience"):
        small_train(epochs=4, swa_epochs=2, patience=3)
    # Runs without SWA keep the configuration fingerprint of runs started before the field existed (resumable).
    model_config = RefineVADConfig(feature_dim=8, category_names=["Fire"])
    assert "swa_epochs" not in _config_fingerprint(small_train(), model_config)["train"]
    assert _config_fingerprint(small_train(swa_epochs=3), model_config)["train"]["swa_epochs"] == 3


def test_attention_window_enters_the_fingerprint_only_when_set():
    # Runs with global attention keep the fingerprint they had before the field existed (resumable).
    model_config = RefineVADConfig(feature_dim=8, category_names=["Fire"])
    assert "attention_window" not in _config_fingerprint(small_train(), model_config)["model"]
    windowed = model_config.model_copy(update={"attention_window": 2})
    assert _config_fingerprint(small_train(), windowed)["model"]["attention_window"] == 2


def test_ped2_run_config_swa_checkpoint_rule(tmp_path):
    from bench.ped2_train import Ped2RunConfig
    from model.training import TrainResult

    with pytest.raises(ValueError, match="swa_epochs"):
        Ped2RunConfig(checkpoint="swa", train={"epochs": 10, "patience": None})
    run = Ped2RunConfig(checkpoint="swa", train={"epochs": 10, "patience": None, "swa_epochs": 5})
    result = TrainResult(
        tmp_path / "best.pt", tmp_path / "last.pt", 3, {}, swa_checkpoint=tmp_path / "swa.pt"
    )
    assert run.chosen(result) == tmp_path / "swa.pt"
    assert Ped2RunConfig(checkpoint="last").chosen(result) == tmp_path / "last.pt"
    with pytest.raises(ValueError, match=r"no swa\.pt"):
        run.chosen(TrainResult(tmp_path / "best.pt", tmp_path / "last.pt", 3, {}))
    # From a finished run's folder (live-cv rescoring a cv run's fold models): only what the run wrote.
    (tmp_path / "last.pt").write_bytes(b"")
    assert Ped2RunConfig(checkpoint="last").checkpoint_in(tmp_path) == tmp_path / "last.pt"
    with pytest.raises(FileNotFoundError, match='no "swa" checkpoint'):
        run.checkpoint_in(tmp_path)


def test_live_window_consistency_compares_prefix_and_whole_clip_scores(synthetic):
    from model.training import live_window_consistency

    features, _, _ = synthetic
    x = torch.stack([torch.from_numpy(features.load(r)[:12]) for r in list(features.records)[:6]])
    generator = torch.Generator().manual_seed(0)
    full = RefineVAD(small_model(features)).train()
    loss = live_window_consistency(full, x, generator)
    assert full.training  # restored
    assert float(loss.detach()) > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in full.motar.parameters())
    # A head that scores each snippet alone sees no difference between a prefix and the whole clip.
    base = RefineVAD(small_model(features, use_motar=False, injection="none")).train()
    assert float(live_window_consistency(base, x, generator).detach()) == pytest.approx(0.0, abs=1e-6)


def test_the_live_consistency_term_trains_resumes_and_leaves_other_runs_unchanged(synthetic, tmp_path):
    features, _, _ = synthetic
    live = small_train(epochs=3, loss=LossConfig(lambda_live=1.0))
    straight = train(features, tmp_path / "straight", live, small_model(features), progress=False)
    assert all(h["train_live"] > 0 for h in straight.history)
    train(features, tmp_path / "resumed", live, small_model(features), progress=False, stop_after_epochs=1)
    resumed = train(features, tmp_path / "resumed", live, small_model(features), progress=False, resume=True)
    s1 = load_checkpoint_payload(straight.last_checkpoint)["state_dict"]
    s2 = load_checkpoint_payload(resumed.last_checkpoint)["state_dict"]
    assert all(torch.allclose(s1[k], s2[k], atol=1e-6) for k in s1)
    off = train(features, tmp_path / "off", small_train(epochs=3), small_model(features), progress=False)
    assert not all(
        torch.equal(s1[k], load_checkpoint_payload(off.last_checkpoint)["state_dict"][k]) for k in s1
    )
    # The term draws from its own generator: a head it cannot change (base MLP+MIL, for which it is exactly zero)
    # trains to the same weights with it as without it, so every other random draw is as it was.
    base = small_model(features, use_motar=False, injection="none")
    plain = small_train(epochs=2, loss=LossConfig(use_cat=False, use_gmm=False))
    with_term = small_train(epochs=2, loss=LossConfig(use_cat=False, use_gmm=False, lambda_live=1.0))
    a = train(features, tmp_path / "base_plain", plain, base, progress=False)
    b = train(features, tmp_path / "base_live", with_term, base, progress=False)
    sa, sb = (load_checkpoint_payload(r.last_checkpoint)["state_dict"] for r in (a, b))
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    # Runs without the term keep the fingerprint they had before it existed, so they still resume.
    assert "lambda_live" not in json.dumps(_config_fingerprint(small_train(), small_model(features)))
    assert "lambda_live" in json.dumps(_config_fingerprint(live, small_model(features)))
