"""The shipped `v3` model (model/weights/v3.pt): Ped2 + surv-fight on the motion backbone's `motion-grid-v2`
features, with Fighting.

It loads with the backbone its identity records (the v2 motion descriptor), is marked trained, and on real
surveillance fights scores a fight clip above an ordinary clip of the same camera and names it Fighting. The
clips are training clips of v3 (all of surv-fight is), so this checks the shipped file and its serving path,
not accuracy: held-out figures are in the model card (`python -m bench.fight_cv`)."""

from __future__ import annotations

import csv

import pytest

from model.backbones.motion import DYNAMICS_VERSION
from model.backbones.registry import config_for_identity, load_backbone
from model.checkpoint import load_checkpoint
from model.ensemble import RefineVADEnsemble
from model.inference import SHIPPED_CHECKPOINTS, AnalysisEngine, EngineConfig
from tests.shared_data import SURV_FIGHT_ROOT


def test_v3_loads_with_its_own_descriptor_and_the_fighting_category() -> None:
    loaded = load_checkpoint(SHIPPED_CHECKPOINTS["v3"])
    assert loaded.trained
    # Chosen by bench.fight_cv: the motion backbone alone with motion-grid-v2 (no appearance network).
    assert loaded.backbone.name == "motion" and loaded.backbone.weights == DYNAMICS_VERSION
    backbone = load_backbone(config_for_identity(loaded.backbone), "cpu")
    assert backbone.identity == loaded.backbone
    backbone.close()
    assert loaded.config.category_names == ["Biking", "Fighting", "Skateboarding", "Vehicle"]
    assert isinstance(loaded.model, RefineVADEnsemble) and len(loaded.model.members) >= 2
    assert SHIPPED_CHECKPOINTS["v3"].stat().st_size < 48 * 2**20


@pytest.mark.integration
@pytest.mark.skipif(not SURV_FIGHT_ROOT.is_dir(), reason="surv-fight is not beside the checkout")
def test_a_fight_scores_above_ordinary_activity_of_its_camera_and_is_named_fighting() -> None:
    with (SURV_FIGHT_ROOT / "clips.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_source: dict[str, dict[str, str]] = {}
    for row in rows:
        by_source.setdefault(row["source"], {})[row["fight"]] = row["file"]
    source = next(s for s, files in sorted(by_source.items()) if {"0", "1"} <= set(files))
    engine = AnalysisEngine.from_config(EngineConfig(device="cpu", checkpoint="v3"))
    fight = engine.analyze(SURV_FIGHT_ROOT / by_source[source]["1"])
    calm = engine.analyze(SURV_FIGHT_ROOT / by_source[source]["0"])
    assert max(s.head_score for s in fight.snippets) > max(s.head_score for s in calm.snippets)
    top = max(fight.snippets, key=lambda s: s.head_score)
    assert max(top.categories, key=top.categories.get) == "Fighting"
