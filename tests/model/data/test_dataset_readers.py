"""The known datasets' readers on the shared data (read in place)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from model.data.dataset_readers import (
    READERS,
    dataset_manifest,
    ped1_frame_labels,
    ped1_manifest,
    ped2_manifest,
    surv_fight_manifest,
)
from model.data.manifest import ManifestError
from model.data.ped2 import Ped2Dataset
from tests.shared_data import SHARED_DATA

PED2 = SHARED_DATA / "ped2"
SURV_FIGHT = SHARED_DATA / "surv-fight"
PED1 = SHARED_DATA / "ped1"


def test_surv_fight_lists_every_clip_with_fighting_and_its_source_as_group() -> None:
    manifest = surv_fight_manifest(SURV_FIGHT)
    assert len(manifest.entries) == 238
    fights = [e for e in manifest.entries if e.label]
    assert len(fights) == 117 and {e.category for e in fights} == {"Fighting"}
    assert all(e.category is None for e in manifest.entries if not e.label)
    assert manifest.category_names == ["Fighting"]
    with (SURV_FIGHT / "clips.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert manifest.groups() == {r["file"].rsplit("/", 1)[1].removesuffix(".mp4"): r["source"] for r in rows}
    assert len(set(manifest.groups().values())) == len({r["source"] for r in rows}) > 10
    assert {e.licence for e in manifest.entries} == {"MIT"}
    assert {e.split for e in manifest.entries} == {"train"}
    assert not manifest.missing()
    first = manifest.extraction_inputs("train")[0]
    assert (first.name, first.label, first.category, first.dataset) == ("fi001", 1, "Fighting", "surv-fight")
    assert first.uri == str(SURV_FIGHT.resolve() / "fight" / "fi001.mp4")


def test_ped2_keeps_the_split_counts_names_and_categories() -> None:
    manifest = ped2_manifest(PED2)
    dataset = Ped2Dataset(PED2)
    counts = Counter((e.split, e.label) for e in manifest.entries)
    assert counts == {("train", 0): 12, ("train", 1): 6, ("test", 0): 4, ("test", 1): 6}
    assert manifest.category_names == dataset.category_names == ["Biking", "Skateboarding", "Vehicle"]
    assert manifest.fps == dataset.fps == 10.0
    for split in ("train", "test"):
        # The same videos, labels and categories as Ped2Dataset gives extraction (ped2 behaviour unchanged).
        old = [(n, Path(p).resolve(), lab, cat) for n, p, lab, cat in dataset.extraction_inputs(split)]
        new = [
            (i.name, Path(i.uri).resolve(), i.label, i.category) for i in manifest.extraction_inputs(split)
        ]
        assert sorted(new) == sorted(old)
        assert {i.folder_fps for i in manifest.extraction_inputs(split)} == {10.0}
    cart = next(e for e in manifest.entries if e.name == "testing_04")
    assert (cart.split, cart.label, cart.category, cart.group) == ("train", 1, "Vehicle", "testing_04")
    assert not manifest.missing()


def test_ped1_has_normal_training_footage_and_a_test_clip_with_frame_labels() -> None:
    manifest = ped1_manifest(PED1)
    by_name = {e.name: e for e in manifest.entries}
    assert set(by_name) == {"ped1_scene01", "ped1_Test001"}
    normal, test = by_name["ped1_scene01"], by_name["ped1_Test001"]
    assert (normal.split, normal.label, normal.category, normal.path) == ("train", 0, None, "normal/scene01")
    assert (test.split, test.label, test.category, test.path) == ("test", 1, "Biking", "testing/Test001")
    labels = ped1_frame_labels(PED1)["ped1_Test001"]
    assert len(labels) == 200 and labels[59] == 1 and labels[58] == 0 and labels.sum() == 152 - 60 + 1
    assert manifest.split("train") == [normal] and not manifest.missing()


def test_readers_name_what_is_wrong(tmp_path) -> None:
    assert set(READERS) == {"ped2", "surv-fight", "ped1"}
    with pytest.raises(KeyError, match="unknown dataset 'ucf'"):
        dataset_manifest("ucf", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"clips\.csv"):
        surv_fight_manifest(tmp_path)
    (tmp_path / "clips.csv").write_text("file,fight,source\nfight/a.mp4,yes,x\n")
    with pytest.raises(ManifestError, match="line 2: fight must be 1 or 0"):
        surv_fight_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="normal"):
        ped1_manifest(tmp_path)
