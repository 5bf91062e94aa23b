import json

from cli.main import main
from tests.footage import encode_ped2_clip
from tests.shared_data import SHARED_DATA


def test_analyze_prints_scores_and_writes_plot_and_json(tmp_path, capsys) -> None:
    video = encode_ped2_clip(tmp_path / "clip.mp4", clip="testing/frames/02", max_frames=48)
    plot, out = tmp_path / "timeline.png", tmp_path / "result.json"
    assert main(["analyze", str(video), "--device", "cpu", "--plot", str(plot), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "snippet  start_s" in printed and "events (" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(out.read_text())
    assert result["num_snippets"] == 3 and result["frames"] == 48
    assert result["model"]["backbone"]["name"]


def test_analyze_rejects_a_non_video_with_a_clear_error(tmp_path, caplog) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("hello")
    assert main(["analyze", str(bogus), "--device", "cpu"]) == 2
    assert "cannot" in caplog.text.lower()


def test_analyze_json_carries_the_decode_report(capsys) -> None:
    video = SHARED_DATA / "field" / "hevc_packet_loss.ts"
    assert main(["analyze", str(video), "--device", "cpu", "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    decode = result["decode"]
    assert decode["frames_decoded"] == 197 and decode["frames_announced"] is None and not decode["truncated"]
    assert decode["decode_errors"] == decode["damaged_frames"] + 3
    assert decode["geometry_changes"] == [] and decode["timestamp_jumps"] == []
    degraded = [s["degraded"] for s in result["snippets"]]
    assert any(degraded) and not all(degraded)
    for event in result["events"]:  # no event stands on degraded snippets alone
        assert not all(degraded[event["start_snippet"] : event["end_snippet"]])
    assert main(["analyze", str(SHARED_DATA / "field" / "truncated_upload.mp4"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "of 250 announced" in printed and "truncated" in printed


def test_analyze_says_when_the_scene_is_unfamiliar_and_can_report_only(capsys) -> None:
    video = SHARED_DATA / "field" / "phone_vfr.mp4"  # a phone's test pattern: nothing like Ped2
    assert main(["analyze", str(video), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: UNFAMILIAR SCENE" in printed and "events withheld" in printed and "events (0)" in printed
    assert main(["analyze", str(video), "--device", "cpu", "--scene-check", "report", "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (
        result["scene"]["familiar"] is False
        and result["scene"]["unfamiliar_snippets"] == result["num_snippets"]
    )
    assert result["events"] and "withheld" not in result["scene_warning"]
