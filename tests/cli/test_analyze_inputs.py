"""How `refinevad analyze` arguments become inputs: folders of recordings searched, frame folders kept whole, names
unique and file-name safe."""

from __future__ import annotations

from pathlib import Path

from cli.analyze_inputs import expand, unique_names


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_folder_of_recordings_is_searched_in_natural_order(tmp_path: Path) -> None:
    root = tmp_path / "site"
    touch(root / "cam10.mp4")
    touch(root / "cam2.MKV")
    touch(root / "CAM03_20260301")  # a raw DVR export without a suffix
    touch(root / "cam2.json")  # a sidecar: skipped
    touch(root / ".hidden.mp4")
    touch(root / "ped" / "001.jpg")  # a frame folder: one input
    touch(root / "ped" / "nested" / "x.mp4")  # inside a frame folder: not searched
    touch(root / "deep" / "er" / "y.ts")
    inputs = expand([str(root)])
    assert [Path(i.uri).relative_to(root).as_posix() for i in inputs] == [
        "CAM03_20260301",
        "cam2.MKV",
        "cam10.mp4",
        "deep/er/y.ts",
        "ped",
    ]
    assert [i.name for i in inputs] == ["CAM03_20260301", "cam2.MKV", "cam10.mp4", "y.ts", "ped"]
    assert all(i.error is None for i in inputs)


def test_frame_folders_files_and_urls_are_one_input_each_and_repeats_are_merged(tmp_path: Path) -> None:
    frames = touch(tmp_path / "frames" / "000.png").parent
    notes = touch(tmp_path / "notes.txt")  # named explicitly: decoding decides
    inputs = expand([str(frames), f"file://{notes}", str(notes), "http://cam.local/live/stream.ts"])
    assert [i.uri for i in inputs] == [str(frames), str(notes), "http://cam.local/live/stream.ts"]
    assert [i.name for i in inputs] == ["frames", "notes.txt", "stream.ts"]


def test_an_empty_folder_is_a_failing_input_not_nothing(tmp_path: Path) -> None:
    touch(tmp_path / "empty" / "readme.md")
    [item] = expand([str(tmp_path / "empty")])
    assert item.error and "holds no video files" in item.error


def test_names_take_parent_folders_only_where_needed_and_avoid_reserved_ones(tmp_path: Path) -> None:
    paths = [
        tmp_path / "a" / "frames" / "01",
        tmp_path / "b" / "frames" / "01",
        tmp_path / "c" / "02",
        tmp_path / "x" / "summary",
        tmp_path / "y" / "odd name?.mp4",
    ]
    assert unique_names(paths, reserved={"summary"}) == [
        "a__frames__01",
        "b__frames__01",
        "02",
        "x__summary",
        "odd_name_.mp4",
    ]
