from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main as refinevad
from model.backbones.motion import MotionBackbone
from model.data.feature_store import FeatureStore
from model.extraction import VideoInput, extract_to_store
from model.video.snippets import SnippetSpec, iter_snippet_batches
from model.video.source import open_source
from tests.footage import PED2_ROOT, encode_ped2_clip


@pytest.fixture(scope="module")
def backbone() -> MotionBackbone:
    return MotionBackbone()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 50)
    return {
        "bike": encode_ped2_clip(root / "bike.mp4", "testing/frames/02", max_frames=40),
        "walk": encode_ped2_clip(root / "walk.mp4", "training/frames/05", max_frames=33),
        "corrupt": corrupt,
    }


def test_extracts_resumes_and_reports_bad_videos(
    tmp_path: Path, videos: dict[str, Path], backbone: MotionBackbone
) -> None:
    sources = [
        ("bike", str(videos["bike"]), 1, "Biking"),
        VideoInput(name="walk", uri=str(videos["walk"])),
        ("broken", str(videos["corrupt"]), 0, None),
        ("frames", str(PED2_ROOT / "testing/frames/09"), 1, "Biking"),
    ]
    store_root = tmp_path / "store"
    report = extract_to_store(
        sources, store_root, backbone, SnippetSpec(), snippets_per_batch=2, progress=False
    )
    assert report.extracted == ["bike", "walk", "frames"]
    assert list(report.failed) == ["broken"] and "corrupt.mp4" in report.failed["broken"]
    assert "FAILED broken" in report.summary()

    store = FeatureStore.open(store_root)
    assert store.backbone == backbone.identity
    bike, walk, frames = store.entry("bike"), store.entry("walk"), store.entry("frames")
    assert (bike.num_frames, bike.num_snippets, bike.fps, bike.label, bike.category) == (
        40,
        3,
        10.0,
        1,
        "Biking",
    )
    assert (walk.num_frames, walk.num_snippets, walk.label) == (33, 3, 0)
    assert (frames.num_frames, frames.num_snippets) == (120, 8)
    assert "broken" not in store
    assert store.manifest.category_names == ["Biking"]

    # The stored features are exactly what the backbone gives for the snippets of the source.
    with open_source(videos["bike"]) as source:
        snippets = np.concatenate([b.frames for b in iter_snippet_batches(source, SnippetSpec(), 8)])
    np.testing.assert_array_equal(store.load("bike"), backbone.encode_snippets(snippets).numpy())

    # Resuming: nothing already stored is redone; the broken video is retried and reported again.
    stamp = store.feature_path("bike").stat().st_mtime_ns
    again = extract_to_store(sources, store_root, backbone, progress=False)
    assert again.extracted == [] and again.already_present == ["bike", "walk", "frames"]
    assert list(again.failed) == ["broken"]
    assert store.feature_path("bike").stat().st_mtime_ns == stamp


def test_rejects_duplicate_names(tmp_path: Path, videos: dict[str, Path], backbone: MotionBackbone) -> None:
    with pytest.raises(ValueError, match="twice"):
        extract_to_store([("a", str(videos["bike"])), ("a", str(videos["walk"]))], tmp_path, backbone)


def test_cli_extracts_video_files(tmp_path: Path, videos: dict[str, Path]) -> None:
    out = tmp_path / "feats"
    argv = ["extract", "--videos", str(videos["bike"]), str(videos["corrupt"]), "--out", str(out)]
    assert refinevad([*argv, "--no-progress", "--sampled-frames", "4"]) == 1  # one video failed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sampled_frames_per_snippet"] == 4
    assert [v["name"] for v in manifest["videos"]] == ["bike"]
    assert manifest["backbone"]["name"] == "motion"
    assert (
        refinevad(
            [
                "extract",
                "--videos",
                str(videos["bike"]),
                "--out",
                str(out),
                "--no-progress",
                "--sampled-frames",
                "4",
            ]
        )
        == 0
    )


@pytest.mark.integration
def test_cli_ped2_mode_writes_train_and_test_stores(tmp_path: Path) -> None:
    out = tmp_path / "ped2"
    args = ["extract", "--dataset", "ped2", "--root", str(PED2_ROOT), "--out", str(out), "--no-progress"]
    assert refinevad([*args, "--backbone", "motion"]) == 0
    train, test = FeatureStore.open(out / "train"), FeatureStore.open(out / "test")
    assert (len(train), len(test)) == (18, 10)
    assert (
        train.manifest.category_names
        == test.manifest.category_names
        == ["Biking", "Skateboarding", "Vehicle"]
    )
    cart = train.entry("testing_04")
    assert (cart.label, cart.category, cart.num_frames, cart.num_snippets) == (1, "Vehicle", 180, 12)
    skate = test.entry("testing_12")
    assert (skate.category, skate.fps) == ("Skateboarding", 10.0)
    assert test.load("training_13").shape == (test.entry("training_13").num_snippets, 336)


def test_text_branch_captions_follow_snippets(tmp_path: Path, videos: dict[str, Path]) -> None:
    import open_clip
    import torch

    from model.backbones.clip import ClipBackbone
    from model.backbones.identity import BackboneIdentity

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32", pretrained=None)
    identity = BackboneIdentity(
        name="clip", architecture="ViT-S-32", weights="random", dim=768, text_branch=True
    )
    captions = {"bike": ["a cyclist among pedestrians", "the cyclist leaves"]}
    backbone = ClipBackbone(
        model,
        identity,
        torch.device("cpu"),
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
        tokenizer=open_clip.get_tokenizer("ViT-S-32"),
        captions=captions,
    )
    sources = [("bike", str(videos["bike"]), 1, "Biking"), ("walk", str(videos["walk"]), 0, None)]
    spec = SnippetSpec(sampled_frames_per_snippet=1)
    report = extract_to_store(sources, tmp_path, backbone, spec, snippets_per_batch=2, progress=False)
    assert report.extracted == ["bike"] and "walk" in report.failed and "captions" in report.failed["walk"]
    features = FeatureStore.open(tmp_path).load("bike")
    assert features.shape == (3, 768)  # 40 frames: 3 snippets, 2 captions (the last one repeats)
    text = backbone.encode_text(["a cyclist among pedestrians", "the cyclist leaves", "the cyclist leaves"])
    np.testing.assert_allclose(features[:, 384:], text.numpy(), rtol=1e-4, atol=1e-4)
