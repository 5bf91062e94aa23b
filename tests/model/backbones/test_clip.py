from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from model.backbones.clip import ClipBackbone, WeightsUnavailableError, file_sha256
from model.backbones.registry import BackboneConfig, load_backbone
from model.video.source import open_source
from tests.footage import PED2_ROOT

ARCH = "ViT-S-32"  # small enough to build, save and load quickly on CPU


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None).eval()
    path = tmp_path_factory.mktemp("weights") / "vit-s-32-random.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    with open_source(PED2_ROOT / "testing/frames/05") as source:
        return source.read_batch(24)  # [24, 240, 360, 3]


@pytest.fixture(scope="module")
def backbone(saved_model: tuple[torch.nn.Module, Path]) -> ClipBackbone:
    config = BackboneConfig(
        name="clip", clip_arch=ARCH, clip_pretrained=None, clip_checkpoint=saved_model[1], batch_size=5
    )
    loaded = load_backbone(config, "cpu")
    assert isinstance(loaded, ClipBackbone)
    return loaded


def test_loads_a_saved_checkpoint_through_the_real_loader(
    saved_model: tuple[torch.nn.Module, Path], backbone: ClipBackbone, frames: np.ndarray
) -> None:
    model, path = saved_model
    ident = backbone.identity
    assert (ident.name, ident.architecture, ident.dim, ident.text_branch) == ("clip", ARCH, 384, False)
    assert ident.weights == f"sha256:{file_sha256(path)}"
    assert backbone.dtype == torch.float32  # auto precision on CPU
    with torch.inference_mode():
        pixels = backbone.preprocess(torch.from_numpy(frames[:4]))
        expected = model.encode_image(pixels)
    torch.testing.assert_close(backbone.encode_frames(frames[:4]), expected, rtol=1e-4, atol=1e-4)


def test_device_preprocessing_matches_open_clip_transform(backbone: ClipBackbone, frames: np.ndarray) -> None:
    transform = open_clip.image_transform(224, is_train=False)
    reference = torch.stack([transform(Image.fromarray(f)) for f in frames[:3]])
    ours = backbone.preprocess(torch.from_numpy(frames[:3]))
    assert ours.shape == reference.shape == (3, 3, 224, 224)
    assert (ours - reference).abs().mean() < 0.02  # PIL vs torch bicubic differ by rounding only


def test_snippet_feature_is_mean_of_frame_embeddings_and_stateless(
    backbone: ClipBackbone, frames: np.ndarray
) -> None:
    snippets = frames[:6].reshape(3, 2, 240, 360, 3)  # batch_size 5: snippets straddle forward passes
    features = backbone.encode_snippets(snippets)
    assert features.shape == (3, 384) and features.dtype == torch.float32
    per_frame = backbone.encode_frames(frames[:6]).view(3, 2, -1).mean(1)
    torch.testing.assert_close(features, per_frame, rtol=1e-4, atol=1e-5)
    alone = backbone.encode_snippets(torch.from_numpy(snippets[2:3]))
    torch.testing.assert_close(alone[0], features[2], rtol=1e-4, atol=1e-5)


def test_offline_download_fails_within_seconds_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REFINEVAD_CLIP_CHECKPOINT", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: an offline hub
    config = BackboneConfig(name="clip", clip_arch="ViT-B-16", clip_pretrained="openai", cache_dir=tmp_path)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        load_backbone(config, "cpu")
    assert time.perf_counter() - start < 5.0
    assert "clip_checkpoint" in str(info.value) and "REFINEVAD_CLIP_CHECKPOINT" in str(info.value)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        load_backbone(config, "cpu")


def test_bad_settings_give_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINEVAD_CLIP_CHECKPOINT", str(tmp_path / "missing.pt"))
    config = BackboneConfig(name="clip", clip_arch=ARCH)
    assert config.clip_checkpoint == tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match="clip_checkpoint"):
        load_backbone(config, "cpu")
    monkeypatch.delenv("REFINEVAD_CLIP_CHECKPOINT")
    with pytest.raises(ValueError, match="openai"):
        load_backbone(BackboneConfig(name="clip", clip_arch="ViT-B-16", clip_pretrained="nope"), "cpu")
    with pytest.raises(ValueError, match="clip_arch"):
        load_backbone(BackboneConfig(name="clip", clip_arch="ViT-Q-99"), "cpu")


def test_text_branch_concatenates_caption_embeddings(
    saved_model: tuple[torch.nn.Module, Path], frames: np.ndarray, tmp_path: Path
) -> None:
    model, path = saved_model
    captions = {"clip05": ["a person rides a bicycle", "people walk on a path"]}
    captions_file = tmp_path / "captions.json"
    captions_file.write_text(json.dumps(captions))
    config = BackboneConfig(
        name="clip", clip_arch=ARCH, clip_pretrained=None, clip_checkpoint=path, text_captions=captions_file
    )
    backbone = load_backbone(config, "cpu")
    assert backbone.identity.text_branch and backbone.dim == 768
    snippets = frames[:4].reshape(2, 2, 240, 360, 3)
    text = backbone.captions_for("clip05")
    features = backbone.encode_snippets(snippets, text)
    assert features.shape == (2, 768)
    with torch.inference_mode():
        expected = model.encode_text(open_clip.get_tokenizer(ARCH)(text))
    torch.testing.assert_close(features[:, 384:], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="caption"):
        backbone.encode_snippets(snippets)
    with pytest.raises(KeyError, match="other"):
        backbone.captions_for("other")
