import json

import pytest

from model.ablation import (
    INJECTION_VARIANTS,
    LADDER,
    format_markdown,
    run_ablation,
    select_variants,
    summarise,
)
from model.data.datasets import FeatureSet
from model.data.synthetic import SyntheticGenerator, SyntheticSpec
from model.evaluation.runner import truth_for_store
from model.training import TrainConfig

SMALL = {"transformer_ff": 32, "proj_dim": 32, "emb_dim": 8, "classifier_hidden": 16}


def test_ladder_matches_the_spec():
    names = [v.name for v in LADDER]
    assert names == ["base", "+motar", "+injection-hard", "full", "full-no-gmm"]
    base, motar, hard, full, _ = LADDER
    assert base.model == {"use_motar": False, "injection": "none"} and base.loss["use_cat"] is False
    assert motar.model["use_motar"] and motar.model["injection"] == "none"
    assert hard.model["soft_weights"] is False and hard.model["injection"] == "cross_attention"
    assert full.model["soft_weights"] is True and full.loss == {"use_cat": True, "use_gmm": True}
    assert [v.model["injection"] for v in INJECTION_VARIANTS] == ["linear", "addnorm_ffn", "cross_attention"]
    assert [v.name for v in select_variants("base,injection")] == ["base"] + [
        v.name for v in INJECTION_VARIANTS
    ]
    with pytest.raises(ValueError, match="unknown"):
        select_variants("nope")


def test_summary_statistics():
    s = summarise([0.8, 0.9, None, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["std"] == pytest.approx(0.1) and s["n"] == 3
    assert summarise([0.5])["std"] == 0.0 and summarise([None])["mean"] is None


@pytest.mark.integration
def test_ablation_runs_variants_over_seeds_and_resumes(tmp_path):
    gen = SyntheticGenerator(SyntheticSpec(dim=16, min_snippets=16, max_snippets=32))
    train_store, _ = gen.write_store(tmp_path / "train", 12, 12, seed=1)
    test_store, labels = gen.write_store(tmp_path / "test", 4, 4, seed=2)
    config = TrainConfig(epochs=2, batch_size=8, threads=1, val_fraction=0.25, patience=None)
    args = (
        FeatureSet.from_store(train_store),
        FeatureSet.from_store(test_store),
        truth_for_store(test_store, labels),
    )
    variants = select_variants("base,full,inject-linear")
    report = run_ablation(
        *args,
        tmp_path / "out",
        seeds=[1, 2],
        variants=variants,
        train_config=config,
        model_overrides=SMALL,
        progress=False,
    )
    assert [r["variant"] for r in report["rows"]] == ["base", "full", "inject-linear"]
    for row in report["rows"]:
        assert [r["seed"] for r in row["runs"]] == [1, 2]
        assert row["summary"]["auc"]["n"] == 2 and 0 <= row["summary"]["auc"]["mean"] <= 1
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["rows"][0]["variant"] == "base"
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert table == format_markdown(report) and "| full |" in table and "±" in table
    metrics_file = tmp_path / "out" / "runs" / "full" / "seed2" / "metrics.json"
    stamp = metrics_file.stat().st_mtime_ns
    again = run_ablation(
        *args,
        tmp_path / "out",
        seeds=[1, 2],
        variants=variants,
        train_config=config,
        model_overrides=SMALL,
        progress=False,
    )
    assert metrics_file.stat().st_mtime_ns == stamp  # reused, not retrained
    assert again["rows"] == report["rows"]
