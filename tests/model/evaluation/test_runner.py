import numpy as np
import pytest

from model.backbones.identity import BackboneIdentity
from model.checkpoint import save_checkpoint
from model.config import RefineVADConfig
from model.data.feature_store import FeatureStore, VideoEntry
from model.evaluation.ground_truth import NORMAL, FrameLabels
from model.evaluation.runner import evaluate_store, ped2_frame_labels, truth_for_store
from model.evaluation.scores_folder import read_scores_folder
from model.refinevad import RefineVAD
from tests.shared_data import PED2_ROOT

PED2 = PED2_ROOT
IDENTITY = BackboneIdentity(name="t", architecture="t", weights="t", dim=8)


@pytest.fixture
def store(tmp_path):
    s = FeatureStore.create_or_open(tmp_path / "store", IDENTITY, category_names=["Fire"])
    rng = np.random.default_rng(0)
    s.add(
        VideoEntry(name="a", label=1, category="Fire", num_frames=40, fps=10, num_snippets=3),
        rng.random((3, 8)),
    )
    s.add(VideoEntry(name="n", label=0, num_frames=30, fps=10, num_snippets=2), rng.random((2, 8)))
    return s


def test_truth_for_store_uses_frame_labels_and_store_categories(store):
    labels = FrameLabels(frames={"a": [0] * 10 + [1] * 20 + [0] * 10})
    a, n = truth_for_store(store, labels)
    assert a.category == "Fire" and a.intervals == ((10, 30),) and a.num_frames == 40
    assert n.category == NORMAL and n.num_frames == 30
    with pytest.raises(ValueError, match="no frame labels"):
        truth_for_store(store, None)


def test_evaluate_store_writes_scores_and_checks_backbone(store, tmp_path):
    model = RefineVAD(RefineVADConfig(feature_dim=8, category_names=["Fire"], transformer_ff=16, proj_dim=16))
    ck = save_checkpoint(tmp_path / "m.pt", model, IDENTITY, {"trained": False})
    labels = FrameLabels(frames={"a": [0] * 10 + [1] * 20 + [0] * 10})
    metrics = evaluate_store(ck, store, labels, scores_dir=tmp_path / "scores")
    assert metrics["num_videos"] == 2 and metrics["num_frames"] == 40 + 30 and metrics["trained"] is False
    folder = read_scores_folder(tmp_path / "scores")
    assert folder.category_names == ["Fire"] and folder.scores["a"].shape == (3,)
    other = BackboneIdentity(name="u", architecture="t", weights="t", dim=8)
    save_checkpoint(tmp_path / "o.pt", model, other, {})
    with pytest.raises(ValueError, match="backbone mismatch"):
        evaluate_store(tmp_path / "o.pt", store, labels)


@pytest.mark.skipif(not (PED2 / "wvad_split.json").is_file(), reason="Ped2 absent")
def test_ped2_frame_labels_cover_the_test_split():
    labels = ped2_frame_labels(PED2)
    assert len(labels.frames) == 10
    truth = labels.to_truth()
    anomalous = [t for t in truth if t.is_anomalous]
    assert len(anomalous) == 6 and {t.category for t in anomalous} <= {"Biking", "Skateboarding", "Vehicle"}
