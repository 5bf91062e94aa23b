"""The shipped models: the default (model/weights/default.pt, two-stream features) and the earlier motion-only
model (ped2_motion.pt). They load, match the backbone their identity records, are marked trained, and on real
Ped2 test footage score a clip's anomalous part above its normal part."""

from __future__ import annotations

import numpy as np
import pytest

from model.backbones.registry import BackboneConfig, config_for_identity, load_backbone
from model.checkpoint import load_checkpoint
from model.data.ped2 import Ped2Dataset
from model.ensemble import RefineVADEnsemble
from model.inference import DEFAULT_CHECKPOINT, SHIPPED_CHECKPOINTS, AnalysisEngine, EngineConfig
from tests.shared_data import PED2_ROOT

SNIPPET_FRAMES = 16


def test_default_checkpoint_loads_and_matches_the_two_stream_backbone() -> None:
    loaded = load_checkpoint(DEFAULT_CHECKPOINT)
    assert loaded.trained
    assert loaded.backbone.name == "two_stream"
    backbone = load_backbone(config_for_identity(loaded.backbone), "cpu")
    assert loaded.backbone == backbone.identity
    # The pretrained appearance weights are the packaged ImageNet file, identified by its hash.
    assert (
        "sha256:579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db" in loaded.backbone.weights
    )
    assert loaded.config.category_names == ["Biking", "Skateboarding", "Vehicle"]
    assert loaded.config.input_norm == "standardize"
    # A seed ensemble of five heads of the shipped config (stage 7 in the model card), each standardising its input.
    assert isinstance(loaded.model, RefineVADEnsemble) and len(loaded.model.members) == 5
    assert loaded.metadata["ensemble"]["seeds"] == [42, 43, 44, 45, 46]
    assert all(float(m.input_norm.std.min()) > 0 for m in loaded.model.members)
    # Small enough to live in the package: five heads of about 8 MB each (fp16 matrices).
    assert DEFAULT_CHECKPOINT.stat().st_size < 48 * 2**20
    assert "ped2_test" in loaded.metadata.get("metrics", {})


def test_motion_only_model_stays_loadable_and_selectable() -> None:
    loaded = load_checkpoint(SHIPPED_CHECKPOINTS["ped2_motion"])
    assert loaded.trained
    backbone = load_backbone(BackboneConfig(name="motion"), "cpu")
    assert loaded.backbone == backbone.identity
    engine = AnalysisEngine.from_config(EngineConfig(device="cpu", checkpoint="ped2_motion"))
    assert engine.identity.backbone.name == "motion" and engine.identity.trained


@pytest.fixture(scope="module")
def default_engine() -> AnalysisEngine:
    return AnalysisEngine.from_config(EngineConfig(device="cpu"))


def test_engine_uses_the_trained_default(default_engine: AnalysisEngine) -> None:
    assert default_engine.identity.trained
    assert default_engine.untrained_warning is None
    assert default_engine.identity.backbone.name == "two_stream"


@pytest.mark.integration
@pytest.mark.skipif(not PED2_ROOT.is_dir(), reason="UCSD Ped2 is not beside the checkout")
# testing_02: the test clip with the longest normal stretch (5 snippets) before its cyclist (6 snippets).
@pytest.mark.parametrize("clip", ["testing_02"])
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
