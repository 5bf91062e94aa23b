"""The shipped default model (model/weights/default.pt): it loads, matches the motion backbone, is marked trained,
and on real Ped2 test footage scores a clip's anomalous part above its normal part."""

from __future__ import annotations

import numpy as np
import pytest

from model.backbones.registry import BackboneConfig, load_backbone
from model.checkpoint import load_checkpoint
from model.data.ped2 import Ped2Dataset
from model.inference import DEFAULT_CHECKPOINT, AnalysisEngine, EngineConfig
from tests.shared_data import PED2_ROOT

SNIPPET_FRAMES = 16


def test_default_checkpoint_loads_and_matches_the_motion_backbone() -> None:
    loaded = load_checkpoint(DEFAULT_CHECKPOINT)
    assert loaded.trained
    backbone = load_backbone(BackboneConfig(name="motion"), "cpu")
    assert loaded.backbone.mismatch(backbone.identity) is None
    assert loaded.backbone == backbone.identity
    assert loaded.config.category_names == ["Biking", "Skateboarding", "Vehicle"]
    # Small enough to live in the package.
    assert DEFAULT_CHECKPOINT.stat().st_size < 8 * 2**20
    assert "ped2_test" in loaded.metadata.get("metrics", {})


@pytest.fixture(scope="module")
def default_engine() -> AnalysisEngine:
    return AnalysisEngine.from_config(EngineConfig(device="cpu"))


def test_engine_uses_the_trained_default(default_engine: AnalysisEngine) -> None:
    assert default_engine.identity.trained
    assert default_engine.untrained_warning is None
    assert default_engine.identity.backbone.name == "motion"


@pytest.mark.integration
@pytest.mark.skipif(not PED2_ROOT.is_dir(), reason="UCSD Ped2 is not beside the checkout")
@pytest.mark.parametrize("clip", ["testing_07"])
def test_anomalous_part_scores_higher_than_normal_part(default_engine: AnalysisEngine, clip: str) -> None:
    dataset = Ped2Dataset(PED2_ROOT)
    labels = dataset.frame_labels(clip)
    assert 0 < labels.sum() < labels.size, "the clip must have a normal and an anomalous part"
    result = default_engine.analyze(dataset.path(clip))
    scores = np.array([s.score for s in result.snippets])
    assert len(scores) == -(-labels.size // SNIPPET_FRAMES)
    # Snippets wholly inside one part (a snippet straddling the onset belongs to neither).
    padded = np.concatenate([labels, np.full(len(scores) * SNIPPET_FRAMES - labels.size, labels[-1])])
    per_snippet = padded.reshape(len(scores), SNIPPET_FRAMES)
    anomalous = per_snippet.all(axis=1)
    normal = ~per_snippet.any(axis=1)
    assert anomalous.any() and normal.any()
    assert scores[anomalous].mean() > scores[normal].mean()
