from pathlib import Path

import numpy as np
import pytest

from model.data.public_release import (
    XD_VIOLENCE_CATEGORIES,
    detect_dataset,
    parse_ucf_label,
    parse_xd_label,
    read_release_list,
    split_crop,
)
from tests.shared_data import UCF_CRIME_ROOT

UCF = UCF_CRIME_ROOT


def test_label_parsing():
    assert parse_ucf_label("Normal").label == 0
    assert parse_ucf_label("RoadAccidents").category == "RoadAccidents"
    with pytest.raises(ValueError):
        parse_ucf_label("Riot")
    assert parse_xd_label("A").label == 0 and parse_xd_label("A").category is None
    multi = parse_xd_label("B2-G-0")
    assert multi.label == 1 and multi.category == "Shooting" and multi.categories == ("Shooting", "Explosion")
    assert parse_xd_label("B6").category == "CarAccident"
    with pytest.raises(ValueError):
        parse_xd_label("B3")
    assert len(XD_VIOLENCE_CATEGORIES) == 6
    assert detect_dataset(["Normal", "Abuse"]) == "ucf-crime"
    assert detect_dataset(["A", "B1-0-0", "G"]) == "xd-violence"


def test_split_crop():
    assert split_crop("Abuse001_x264__7") == ("Abuse001_x264", 7)
    assert split_crop("v.mp4__x") == ("v.mp4__x", 0)


def _write_release(root: Path, rows: list[tuple[str, str]], dim: int = 8) -> Path:
    lines = ["path,label"]
    for rel, label in rows:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, np.ones((5, dim), np.float32))
        lines.append(f"/home/someone/Desktop/UCFClipFeatures/{rel},{label}")
    csv = root / "list.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def test_read_release_remaps_paths_and_groups_crops(tmp_path):
    rows = [(f"Abuse/Abuse001_x264__{k}.npy", "Abuse") for k in (1, 0, 2)]
    rows += [("Testing_Normal_Videos_Anomaly/Normal_Videos_001_x264__0.npy", "Normal")]
    csv = _write_release(tmp_path / "feats", rows)
    release = read_release_list(csv, tmp_path / "feats")
    assert release.dataset == "ucf-crime"
    assert release.release_prefix == "/home/someone/Desktop/UCFClipFeatures"
    abuse, normal = release.videos
    assert abuse.name == "Abuse001_x264" and abuse.crop_ids == (0, 1, 2) and abuse.label == 1
    assert abuse.crops[0] == tmp_path / "feats" / "Abuse" / "Abuse001_x264__0.npy"
    assert normal.label == 0 and normal.category is None
    only_one = read_release_list(csv, tmp_path / "feats", crops=[2])
    assert only_one.videos[0].crop_ids == (2,) and len(only_one.videos) == 1
    with pytest.raises(FileNotFoundError, match="not under"):
        read_release_list(csv, tmp_path / "elsewhere")


def test_flat_local_copy_is_found(tmp_path):
    csv = _write_release(tmp_path / "nested", [("Arson/Arson001_x264__0.npy", "Arson")])
    flat = tmp_path / "flat"
    flat.mkdir()
    np.save(flat / "Arson001_x264__0.npy", np.zeros((3, 8), np.float32))
    release = read_release_list(csv, flat)
    assert release.videos[0].crops[0] == flat / "Arson001_x264__0.npy"


@pytest.mark.skipif(not (UCF / "vadclip_train_list.csv").is_file(), reason="UCF-Crime lists absent")
def test_real_vadclip_lists_parse():
    train = read_release_list(UCF / "vadclip_train_list.csv", "/nonexistent", check_files=False)
    assert train.dataset == "ucf-crime"
    assert len(train.videos) == 1610
    assert sum(v.label for v in train.videos) == 810
    assert all(len(v.crops) == 10 for v in train.videos)
    assert train.videos[0].crops[0] == Path("/nonexistent/Abuse/Abuse001_x264__0.npy")
    test = read_release_list(UCF / "vadclip_test_list.csv", "/nonexistent", check_files=False)
    assert len(test.videos) == 290 and {v.crop_ids for v in test.videos} == {(5,)}
    assert sum(v.label for v in test.videos) == 140
