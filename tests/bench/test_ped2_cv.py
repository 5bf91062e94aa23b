"""Ped2 cross-validation end to end on a small synthetic feature store: `cv` trains the fold models, `live-cv`
rescores them under other live-window start-up rules without retraining."""

from __future__ import annotations

import json

import pytest

from bench.ped2_train import main
from model.data.synthetic import SyntheticGenerator, SyntheticSpec


@pytest.mark.integration
def test_live_cv_rescores_the_cv_fold_models(tmp_path) -> None:
    SyntheticGenerator(SyntheticSpec(dim=16)).write_store(tmp_path / "train", 6, 6, seed=3, prefix="train")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "checkpoint": "last",
                "model": {"train_snippets": 8, "transformer_ff": 32, "proj_dim": 16, "emb_dim": 8},
                "train": {"epochs": 2, "batch_size": 8, "patience": None},
            }
        )
    )
    common = ["--train-features", str(tmp_path / "train"), "--jobs", "2"]
    assert (
        main(["cv", "--config", str(config), "--out", str(tmp_path / "cv"), "--seeds", "1,2", *common]) == 0
    )
    cv = json.loads((tmp_path / "cv" / "report.json").read_text())
    # The report keeps the run's config itself, so live-cv rescores the same checkpoints wherever it runs from.
    assert cv["run_config"]["checkpoint"] == "last" and cv["run_config"]["train"]["epochs"] == 2
    config.write_text(json.dumps({"checkpoint": "best"}))
    out = tmp_path / "live"
    variants = ["--min-windows", "1,6", "--lookaheads", "2,4"]
    assert main(["live-cv", "--cv", str(tmp_path / "cv"), *variants, "--out", str(out), *common]) == 0
    rows = json.loads((out / "report.json").read_text())["variants"]
    assert set(rows) == {f"min_window={m},lookahead={k}" for m in (1, 6) for k in (2, 4)}
    unpadded, padded = rows["min_window=1,lookahead=2"], rows["min_window=6,lookahead=2"]
    # No padding reproduces the cv run's figures exactly; offline figures never depend on the padding.
    assert unpadded["ensemble"] == cv["ensemble"] and unpadded["summary"] == cv["summary"]
    assert padded["ensemble"]["splice_snippet_auc"] == cv["ensemble"]["splice_snippet_auc"]
    # Spliced pairs start with their normal clip, whose first snippets are scored from start-up windows.
    assert padded["ensemble"]["splice_normal_mean_live"] != cv["ensemble"]["splice_normal_mean_live"]
    # A look-ahead changes the first snippets' live scores of every clip and spliced pair.
    ahead = rows["min_window=1,lookahead=4"]
    assert ahead["ensemble"]["splice_normal_mean_live"] != cv["ensemble"]["splice_normal_mean_live"]
    assert ahead["ensemble"]["splice_snippet_auc"] == cv["ensemble"]["splice_snippet_auc"]
    with pytest.raises(SystemExit, match="min-windows"):
        main(["live-cv", "--cv", str(tmp_path / "cv"), "--min-windows", "0", "--out", str(out), *common])
