from pathlib import Path

import numpy as np
import pytest
import torch

from model import RefineVAD, RefineVADConfig
from model.backbones.identity import BackboneIdentity
from model.checkpoint import save_checkpoint
from model.ensemble import RefineVADEnsemble
from model.inference import SHIPPED_CHECKPOINTS, AnalysisEngine, EngineConfig, resolve_checkpoint
from model.video.source import VideoDecodeError
from tests.footage import encode_ped2_clip
from tests.shared_data import SHARED_DATA


@pytest.fixture(scope="module")
def untrained_engine() -> AnalysisEngine:
    """The default engine (the shipped model when installed); its head's weights don't matter to these tests."""
    return AnalysisEngine.from_config(EngineConfig(checkpoint=None, device="cpu"))


def test_analyze_real_clip(tmp_path, untrained_engine: AnalysisEngine) -> None:
    video = encode_ped2_clip(tmp_path / "clip.mp4", max_frames=70)
    result = untrained_engine.analyze(video, frame_scores=True)
    assert result.frames == 70 and result.num_snippets == 5  # ceil(70 / 16)
    assert result.snippets[-1].end_s == pytest.approx(6.9)  # the last frame's time
    assert result.snippets[1].start_s == pytest.approx(1.6)
    assert result.video.duration_s == pytest.approx(7.0) and result.video.fps == pytest.approx(10.0)
    assert result.decode.frames_decoded == 70 and result.decode.frames_announced == 70
    assert not result.decode.truncated and result.decode.decode_errors == 0
    assert not any(s.degraded for s in result.snippets)
    assert len(result.frame_scores) == 70
    assert all(abs(sum(s.categories.values()) - 1) < 1e-4 for s in result.snippets)
    assert abs(sum(result.video_categories.values()) - 1) < 1e-4
    assert set(result.timings) == {"decode_s", "backbone_s", "head_s"}


def test_untrained_models_are_flagged(tmp_path, monkeypatch, untrained_engine: AnalysisEngine) -> None:
    import model.inference as inference

    monkeypatch.setattr(inference, "DEFAULT_CHECKPOINT", tmp_path / "missing.pt")
    fallback = AnalysisEngine.from_config(EngineConfig(device="cpu"))
    assert not fallback.identity.trained and "UNTRAINED" in fallback.untrained_warning
    identity = untrained_engine.backbone.identity
    config = RefineVADConfig(feature_dim=identity.dim, transformer_ff=64, proj_dim=16)
    path = save_checkpoint(tmp_path / "head.pt", RefineVAD(config), identity, {"trained": False})
    flagged = AnalysisEngine.from_config(EngineConfig(checkpoint=path, device="cpu"))
    assert "UNTRAINED" in flagged.untrained_warning


def test_backbone_mismatch_is_refused(tmp_path) -> None:
    config = RefineVADConfig(feature_dim=512, transformer_ff=64, proj_dim=16)
    wrong = BackboneIdentity(name="motion", architecture="other", weights="v0", dim=512)
    path = save_checkpoint(tmp_path / "head.pt", RefineVAD(config), wrong, {"trained": True})
    with pytest.raises(ValueError, match="backbone mismatch"):
        AnalysisEngine.from_config(EngineConfig(checkpoint=path, device="cpu"))


def test_trained_checkpoint_is_used(tmp_path, untrained_engine: AnalysisEngine) -> None:
    identity = untrained_engine.backbone.identity
    config = RefineVADConfig(
        feature_dim=identity.dim, category_names=["A", "B"], transformer_ff=64, proj_dim=16
    )
    path = save_checkpoint(
        tmp_path / "head.pt", RefineVAD(config), identity, {"trained": True, "metrics": {"auc": 0.9}}
    )
    engine = AnalysisEngine.from_config(EngineConfig(checkpoint=path, device="cpu"))
    assert engine.identity.trained and engine.untrained_warning is None
    assert engine.identity.category_names == ["A", "B"] and engine.identity.metrics == {"auc": 0.9}


def test_limits_and_bad_files(tmp_path) -> None:
    engine = AnalysisEngine.from_config(EngineConfig(device="cpu", max_pixels=1000, max_frames=20))
    video = encode_ped2_clip(tmp_path / "clip.mp4", max_frames=40)
    with pytest.raises(VideoDecodeError, match="pixels"):
        engine.probe(video)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError):
        engine.analyze(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(VideoDecodeError):
        engine.analyze(text)


def test_local_categories_match_windowed_head(untrained_engine: AnalysisEngine) -> None:
    torch.manual_seed(1)
    features = torch.randn(50, untrained_engine.backbone.dim)
    local = untrained_engine.local_categories(features)
    assert local.shape == (50, len(untrained_engine.category_names))
    with torch.no_grad():
        first = untrained_engine.head(features[:32].unsqueeze(0)).category_weights[0]
    assert torch.allclose(local[0], first, atol=1e-5)
    assert np.allclose(local.sum(-1).numpy(), 1, atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("backend", "members"), [("torchscript", 1), ("onnx", 1), ("torchscript", 3), ("onnx", 3)]
)
def test_exported_head_backends_give_the_same_analysis(
    tmp_path, untrained_engine: AnalysisEngine, backend, members
) -> None:
    """A single head and a seed ensemble (`members` > 1) alike."""
    identity = untrained_engine.backbone.identity
    config = RefineVADConfig(
        feature_dim=identity.dim, category_names=["A", "B"], transformer_ff=64, proj_dim=16
    )
    head = RefineVAD(config) if members == 1 else RefineVADEnsemble(config, members)
    path = save_checkpoint(tmp_path / "head.pt", head, identity, {"trained": True})
    video = encode_ped2_clip(tmp_path / "clip.mp4", max_frames=80)
    eager_engine = AnalysisEngine.from_config(EngineConfig(checkpoint=path, device="cpu"))
    assert eager_engine.identity.ensemble_members == members
    eager = eager_engine.analyze(video)
    exported = AnalysisEngine.from_config(
        EngineConfig(checkpoint=path, device="cpu", head_backend=backend, export_cache_dir=tmp_path / "cache")
    ).analyze(video)
    assert np.allclose([s.score for s in eager.snippets], [s.score for s in exported.snippets], atol=1e-4)
    assert np.allclose(
        list(eager.video_categories.values()), list(exported.video_categories.values()), atol=1e-4
    )
    first_e, first_x = eager.snippets[0].categories, exported.snippets[0].categories
    assert np.allclose(list(first_e.values()), list(first_x.values()), atol=1e-4)


def test_progress_follows_the_bytes_read_not_the_container_claims(untrained_engine: AnalysisEngine) -> None:
    """`encoder_restart.ts` claims about 26 hours and millions of frames: under a 1000-frame limit it is analysed
    (the limit counts real frames), the probe counts its 200, and progress runs through to the end."""
    video = SHARED_DATA / "field" / "encoder_restart.ts"
    engine = AnalysisEngine(
        untrained_engine.backbone,
        untrained_engine.head,
        untrained_engine.identity,
        untrained_engine.spec,
        EngineConfig(device="cpu", snippets_per_batch=2, max_frames=1000),
    )
    info = engine.probe(video)
    assert info.frame_count == 200 and info.duration_s == pytest.approx(8.0)
    seen: list[float] = []
    result = engine.analyze(video, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    # Steps through the file, not 0 until the jump to 1 (how far the first step is depends on how far decoding
    # has read ahead of a slower or faster backbone).
    assert 0 < seen[0] < 1.0 and len({round(value, 3) for value in seen}) >= 3
    assert result.frames == 200 and result.video.duration_s == pytest.approx(8.0)
    assert len(result.decode.timestamp_jumps) == 1


def test_shipped_models_are_selectable_by_name(tmp_path, monkeypatch) -> None:
    import model.inference as inference

    assert resolve_checkpoint("ped2_motion") == SHIPPED_CHECKPOINTS["ped2_motion"]
    assert resolve_checkpoint("default") == SHIPPED_CHECKPOINTS["default"]
    assert all(path.is_file() for path in SHIPPED_CHECKPOINTS.values())
    # A file of that name in the working directory wins over the shipped model.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ped2_motion").write_bytes(b"")
    assert resolve_checkpoint("ped2_motion") == Path("ped2_motion")
    assert resolve_checkpoint(None) == inference.DEFAULT_CHECKPOINT
    monkeypatch.setattr(inference, "DEFAULT_CHECKPOINT", tmp_path / "missing.pt")
    assert resolve_checkpoint(None) is None
