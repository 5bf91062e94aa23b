"""`python -m bench.out_of_domain`: the share of snippets above the event threshold, the events raised and the
scene-familiarity verdict of each video, on real footage of the model's own camera and of another."""

from __future__ import annotations

import json

import pytest

from bench.out_of_domain import main
from tests.footage import encode_ped2_clip
from tests.shared_data import FIELD_ROOT, PED2_ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (PED2_ROOT.is_dir() and FIELD_ROOT.is_dir()), reason="shared data not found"),
]


def test_report_separates_the_models_camera_from_another(tmp_path, capsys) -> None:
    ped2 = encode_ped2_clip(tmp_path / "ped2_normal.mp4", clip="training/frames/13")
    other = FIELD_ROOT / "phone_vfr.mp4"
    out = tmp_path / "report.json"
    assert main([str(ped2), str(other), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    rows = {r["video"]: r for r in report["videos"]}
    familiar, unfamiliar = rows["ped2_normal.mp4"], rows["phone_vfr.mp4"]
    assert familiar["scene_familiar"] is True and familiar["scene_distance"] < report["scene_threshold"]
    assert unfamiliar["scene_familiar"] is False and unfamiliar["scene_distance"] > report["scene_threshold"]
    # The head lights up on the other camera; the check keeps it from raising events.
    assert unfamiliar["fraction_above_threshold"] > 0.5 and unfamiliar["events"] == 0
    assert report["videos_flagged_unfamiliar"] == 1
    snippets = familiar["snippets"] + unfamiliar["snippets"]
    high = (
        familiar["fraction_above_threshold"] * familiar["snippets"]
        + unfamiliar["fraction_above_threshold"] * unfamiliar["snippets"]
    )
    assert report["fraction_above_threshold_all"] == pytest.approx(high / snippets, abs=1e-3)
