"""The dataset manifest: a user's CSV and JSON, round trips, and errors that name the entry and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.data.manifest import (
    DatasetEntry,
    DatasetManifest,
    ManifestError,
    check_mix,
    manifest_csv,
    read_manifest,
    write_manifest,
)

USER_CSV = """\
# name: loading-bay
# description: two cameras of the loading bay, May 2024
# fps: 12.5
# licence: site footage, internal use
path,label,category,group,split
cam1/monday.mp4,normal,,cam1,
cam1/theft.mp4,anomalous,Theft,cam1,train
cam2/frames_0501,0,,cam2,test
/data/cam2/fall.mp4,1,Falling,cam2,test
"""


def test_a_users_csv_reads_with_defaults_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "site" / "bay.csv"
    path.parent.mkdir()
    path.write_text(USER_CSV)
    manifest = read_manifest(path)
    assert (manifest.name, manifest.fps, manifest.root) == ("loading-bay", 12.5, str(path.parent.resolve()))
    assert manifest.description == "two cameras of the loading bay, May 2024"
    assert [e.name for e in manifest.entries] == ["monday", "theft", "frames_0501", "fall"]
    assert [e.label for e in manifest.entries] == [0, 1, 0, 1]
    assert [e.split for e in manifest.entries] == ["train", "train", "test", "test"]
    assert manifest.groups() == {"monday": "cam1", "theft": "cam1", "frames_0501": "cam2", "fall": "cam2"}
    assert {e.licence for e in manifest.entries} == {"site footage, internal use"}
    assert manifest.category_names == ["Falling", "Theft"]
    assert manifest.resolve(manifest.entries[0]) == path.parent.resolve() / "cam1" / "monday.mp4"
    assert manifest.resolve(manifest.entries[3]) == Path("/data/cam2/fall.mp4")  # absolute stays
    assert [e.name for e in manifest.missing()] == ["monday", "theft", "frames_0501", "fall"]
    test_inputs = manifest.extraction_inputs("test")
    assert [(i.name, i.group, i.folder_fps, i.dataset) for i in test_inputs] == [
        ("frames_0501", "cam2", 12.5, "loading-bay"),
        ("fall", "cam2", 12.5, "loading-bay"),
    ]

    for suffix in (".csv", ".json"):
        again = read_manifest(write_manifest(manifest, tmp_path / f"copy{suffix}"))
        assert again == manifest  # the root is written, so it resolves to the same files from anywhere
    assert manifest_csv(manifest).splitlines()[5] == "path,label,category,group,licence,split,name"


def test_a_csv_without_header_lines_is_named_after_its_file_and_paths_are_relative_to_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")
    path = tmp_path / "mine.csv"
    path.write_text("label,path\r\nnormal,clips/a.mp4\r\n,\r\n")  # any column order, CRLF, a blank row
    manifest = read_manifest(path)
    assert manifest.name == "mine" and manifest.fps == 10.0 and manifest.licence is None
    [entry] = manifest.entries
    assert (entry.name, entry.group, entry.split) == ("a", "a", "train")
    assert not manifest.missing()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("cam1/x.mp4,maybe,,cam1", r"line 3 \(cam1/x.mp4\): label: label must be normal or anomalous"),
        (
            "cam1/x.mp4,anomalous,,cam1",
            r"line 3 \(cam1/x.mp4\): category: an anomalous video needs its category",
        ),
        ("cam1/x.mp4,normal,Theft,cam1", r"line 3 \(cam1/x.mp4\): category: a normal video has no category"),
        (",normal,,cam1", r"line 3: path: String should have at least 1 character"),
        ("cam1/x.mp4,normal,,cam1,val", r"line 3 \(cam1/x.mp4\): split: Input should be 'train' or 'test'"),
        ("cam1/x.mp4,normal,,cam1,train,../up", r"line 3 \(cam1/x.mp4\): name: invalid video name"),
        ("cam1/x.mp4,normal,,cam1,train,a,extra", r"line 3: more cells than columns"),
        (
            "cam1/y/ok.mp4,normal,,c\ncam1/ok.mp4,normal,,c",
            r"entries 0 \(cam1/y/ok.mp4\) and 1 \(cam1/ok.mp4\) are both named 'ok'",
        ),
    ],
)
def test_bad_csv_entries_name_the_line_path_and_field(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"# fps: 10\npath,label,category,group,split,name\n{row}\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_bad_files_and_columns_say_what_is_wrong(tmp_path: Path) -> None:
    cases = {
        "cols.csv": ("path,lable\nx.mp4,normal\n", "missing column.s. label; unknown column.s. lable"),
        "head.csv": ("# camera: 3\npath,label\nx.mp4,0\n", "line 1: a comment line before the header"),
        "fps.csv": ("# fps: fast\npath,label\nx.mp4,0\n", "fps: Input should be a valid number"),
        "empty.csv": ("path,label\n", "entries: List should have at least 1 item"),
        "bad.json": ("{not json", "not JSON"),
        "shape.json": ('{"name": "x"}', "an 'entries' list"),
        "x.txt": ("path,label\n", "a .json or .csv file"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ManifestError, match=message):
            read_manifest(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(tmp_path / "none.json")


def test_bad_json_entries_are_all_reported_with_index_and_field(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        '{"name": "m", "entries": [{"path": "a.mp4", "label": 0}, {"path": "b.mp4", "label": 3},'
        ' {"path": "c.mp4", "label": 0, "colour": "red"}]}'
    )
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    text = str(caught.value)
    assert "2 bad entries" in text
    assert "entry 1 (b.mp4): label: Input should be less than or equal to 1" in text
    assert "entry 2 (c.mp4): colour: Extra inputs are not permitted" in text


def test_mixed_manifests_must_not_share_video_names() -> None:
    def one(name: str, video: str) -> DatasetManifest:
        return DatasetManifest(name=name, entries=[DatasetEntry(path=f"{video}.mp4", label=0)])

    check_mix([one("a", "x"), one("b", "y")])
    with pytest.raises(ManifestError, match=r"'x' \(a and b\)"):
        check_mix([one("a", "x"), one("b", "x")])
