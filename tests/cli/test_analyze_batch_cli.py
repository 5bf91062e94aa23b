"""`refinevad analyze` over many inputs in one call: a folder of recordings (videos, a frame folder, a sidecar file),
a broken file and a missing path, on one model, with one JSON per input, a summary, frame indices on every
snippet and the frame folder timed by `--folder-fps`. Footage: UCSD Ped2 (read in place)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cli.main import main
from tests.footage import encode_ped2_clip, ped2_frame_files


def frame_folder(folder: Path, count: int) -> Path:
    """A frame folder of `count` Ped2 frames, linked to the shared files (read in place)."""
    folder.mkdir(parents=True)
    for path in ped2_frame_files("testing/frames/03", max_frames=count):
        (folder / path.name).symlink_to(path)
    return folder


def check_frame_indices(result: dict, frames_per_snippet: int = 16) -> None:
    frames = result["frames"]
    for s in result["snippets"]:
        first = s["index"] * frames_per_snippet
        assert (s["start_frame"], s["end_frame"]) == (first, min(first + frames_per_snippet, frames) - 1)


def test_many_inputs_one_model_one_json_each_and_a_summary(tmp_path: Path, capsys, caplog) -> None:
    recordings = tmp_path / "recordings"
    encode_ped2_clip(recordings / "day1" / "cam1.mp4", clip="testing/frames/01", max_frames=40)
    encode_ped2_clip(recordings / "day2" / "cam1.mp4", clip="testing/frames/02", max_frames=20)
    frame_folder(recordings / "day2" / "frames", 32)
    (recordings / "day1" / "notes.txt").write_text("not a video, skipped by its name")
    broken = tmp_path / "broken.mp4"
    broken.write_text("hello")
    missing = tmp_path / "gone.mp4"
    out = tmp_path / "results"
    argv = [str(recordings), str(broken), str(missing), "--json-dir", str(out), "--folder-fps", "5"]
    with caplog.at_level(logging.INFO):
        code = main(["analyze", *argv, "--device", "cpu", "--no-progress"])
    assert code == 1  # some inputs failed, the others were analysed
    # One model load for all five inputs (every load logs which path serves the head).
    assert sum("acceleration: head served by" in r.getMessage() for r in caplog.records) == 1
    assert "skipped files that are not video by their name (1 .txt)" in caplog.text

    names = ["day1__cam1.mp4", "day2__cam1.mp4", "frames", "broken.mp4", "gone.mp4"]
    summary = json.loads((out / "summary.json").read_text())
    assert [o["name"] for o in summary["inputs"]] == names
    assert (summary["succeeded"], summary["failed"]) == (3, 2)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.json", *(f"{n}.json" for n in names[:3])]
    )
    by_name = {o["name"]: o for o in summary["inputs"]}
    assert "cannot be read" in by_name["broken.mp4"]["error"] and by_name["broken.mp4"]["json_file"] is None
    assert "no such video file" in by_name["gone.mp4"]["error"]

    results = {n: json.loads((out / f"{n}.json").read_text()) for n in names[:3]}
    assert [results[n]["frames"] for n in names[:3]] == [40, 20, 32]
    for result in results.values():
        check_frame_indices(result)
    folder = results["frames"]
    # The frame folder at 5 frames/s, not the default 10: its second snippet starts 16 frames = 3.2 s in.
    assert folder["video"]["fps"] == pytest.approx(5.0) and folder["video"]["duration_s"] == pytest.approx(
        6.4
    )
    assert folder["snippets"][1]["start_s"] == pytest.approx(3.2)
    assert results["day1__cam1.mp4"]["video"]["fps"] == pytest.approx(10.0)  # a video keeps its own timing

    printed = capsys.readouterr().out
    table = printed[printed.index("input ") :]
    assert "FAILED: a mov,mp4" in table and "FAILED: no such video file" in table
    assert "3 of 5 inputs analysed" in printed
    for name in names:
        assert name in table


def test_every_input_failing_exits_2(tmp_path: Path, capsys) -> None:
    bad = []
    for name in ("a.mp4", "b.mov"):
        bad.append(tmp_path / name)
        bad[-1].write_text("not video")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", *map(str, bad), str(empty), "--device", "cpu", "--no-progress"]) == 2
    printed = capsys.readouterr().out
    assert printed.count("FAILED: ") == 3 and "holds no video files" in printed
    assert "0 of 3 inputs analysed" in printed


def test_one_input_json_carries_frame_indices(tmp_path: Path, capsys) -> None:
    video = encode_ped2_clip(tmp_path / "clip.mp4", clip="testing/frames/02", max_frames=40)
    assert main(["analyze", str(video), "--device", "cpu", "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    check_frame_indices(result)
    assert result["snippets"][-1]["end_frame"] == 39


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--json", "out.json"], "--json and --plot take one input"),
        (["--plot", "out.png"], "--json and --plot take one input"),
        (["--folder-fps", "0"], "--folder-fps must be in (0, 1000]"),
    ],
)
def test_bad_arguments_are_refused_before_the_model_loads(
    tmp_path: Path, caplog, extra: list[str], message: str
) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert main(["analyze", str(a), str(b), *extra, "--device", "cpu"]) == 2
    assert message in caplog.text and "acceleration:" not in caplog.text
