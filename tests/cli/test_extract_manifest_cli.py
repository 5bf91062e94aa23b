"""`refinevad extract --manifest` / `--dataset NAME ...`: a user's own footage (two short clips made here from
UCSD Ped2 frames) becomes feature stores per split with labels, categories, groups and licences."""

from __future__ import annotations

import logging
from pathlib import Path

from cli.main import main
from model.data.datasets import FeatureSet
from model.data.feature_store import FeatureStore
from tests.footage import encode_ped2_clip
from tests.shared_data import SHARED_DATA

FAST = ["--backbone", "motion", "--device", "cpu", "--no-progress", "--motion-threads", "1"]


def test_extract_manifest_writes_stores_with_labels_categories_and_groups(tmp_path: Path) -> None:
    footage = tmp_path / "site"
    encode_ped2_clip(footage / "gate" / "walk.mp4", clip="training/frames/01", max_frames=32)
    encode_ped2_clip(footage / "yard" / "bike.mp4", clip="testing/frames/02", max_frames=32)
    manifest = footage / "site.csv"
    manifest.write_text(
        "# name: my-site\n# licence: ours\n"
        "path,label,category,group\n"
        "gate/walk.mp4,normal,,gate-camera\n"
        "yard/bike.mp4,anomalous,Biking,yard-camera\n"
    )
    out = tmp_path / "features"
    assert main(["extract", "--manifest", str(manifest), "--out", str(out), *FAST]) == 0
    assert not (out / "test").exists()  # no test entries, no test store
    store = FeatureStore.open(out / "train")
    assert store.manifest.category_names == ["Biking"]
    walk, bike = store.entry("walk"), store.entry("bike")
    assert (walk.label, walk.category, walk.group, walk.licence, walk.dataset) == (
        0,
        None,
        "gate-camera",
        "ours",
        "my-site",
    )
    assert (bike.label, bike.category, bike.group) == (1, "Biking", "yard-camera")
    assert walk.num_frames == bike.num_frames == 32 and walk.num_snippets == 2
    assert store.load("bike").shape == (2, store.backbone.dim)
    assert store.groups() == {"walk": "gate-camera", "bike": "yard-camera"}
    features = FeatureSet.from_store(store)
    assert features.groups() == {"walk": "gate-camera", "bike": "yard-camera"}
    # Resumable: a second run finds both videos in the store.
    assert main(["extract", "--manifest", str(manifest), "--out", str(out), *FAST]) == 0
    assert len(FeatureStore.open(out / "train")) == 2


def _fails(argv: list[str], caplog, message: str) -> None:
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["extract", *argv, *FAST]) == 2
    assert message in caplog.text


def test_bad_datasets_and_manifests_stop_before_any_extraction(tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.delenv("REFINEVAD_SHARED_DATA", raising=False)
    out = ["--out", str(tmp_path / "o")]
    _fails(["--dataset", "ucf", *out], caplog, "unknown dataset 'ucf' (known: ped2, surv-fight, ped1)")
    _fails(
        ["--dataset", "ped2", "ped1", "--root", str(tmp_path), *out], caplog, "--dataset ped2: where is it?"
    )
    _fails(["--videos", "a.mp4", "--dataset", "ped1", *out], caplog, "give the videos")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nnothere.mp4,normal\nnorhere.mp4,normal\n")
    _fails(["--manifest", str(manifest), *out], caplog, "m: 2 of 2 videos are missing")
    manifest.write_text("path,label\nx.mp4,anomalous\n")
    _fails(["--manifest", str(manifest), *out], caplog, "line 2 (x.mp4): category: an anomalous video needs")
    clash = tmp_path / "clash.csv"
    clash.write_text(f"path,label,name\n{SHARED_DATA / 'ped1' / 'normal' / 'scene01'},0,ped1_scene01\n")
    _fails(
        ["--dataset", f"ped1={SHARED_DATA / 'ped1'}", "--manifest", str(clash), *out],
        caplog,
        "'ped1_scene01' (ped1 and clash)",
    )
    assert not (tmp_path / "o").exists()


def test_a_mix_of_known_datasets_and_a_manifest_goes_into_train_and_test_stores(tmp_path: Path) -> None:
    """ped1 (200 normal frames + its 200-frame test clip, about a second) beside a user's short clip."""
    encode_ped2_clip(tmp_path / "bike.mp4", clip="testing/frames/02", max_frames=32)
    manifest = tmp_path / "mine.json"
    manifest.write_text(
        '{"name": "mine", "entries": [{"path": "bike.mp4", "label": 1, "category": "Biking", "group": "yard"}]}'
    )
    out = tmp_path / "mix"
    argv = [
        "extract",
        "--dataset",
        f"ped1={SHARED_DATA / 'ped1'}",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
    ]
    assert main([*argv, *FAST]) == 0
    train, test = FeatureStore.open(out / "train"), FeatureStore.open(out / "test")
    assert [v.name for v in train] == ["ped1_scene01", "bike"] and [v.name for v in test] == ["ped1_Test001"]
    assert train.manifest.category_names == test.manifest.category_names == ["Biking"]
    assert train.groups() == {"ped1_scene01": "ped1_scene01", "bike": "yard"}
    scene = train.entry("ped1_scene01")
    assert (scene.dataset, scene.fps, scene.num_frames, scene.licence) == (
        "ped1",
        10.0,
        200,
        "UCSD Anomaly Detection Dataset: research use",
    )
