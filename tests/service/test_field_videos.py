"""Real-world video through `POST /analyze` on the real server: each field input (`../shared/data/field`, read in
place) is accepted by its content and comes back with what decoding really found."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import ServerProcess, assert_error
from tests.shared_data import SHARED_DATA

pytestmark = pytest.mark.integration

FIELD = SHARED_DATA / "field"


def analyze(
    client: httpx.Client, path: Path, filename: str | None = None, content_type: str | None = None
) -> dict:
    """Upload `path` under another name (or none) and return the finished job's result."""
    name = path.name if filename is None else filename
    with path.open("rb") as f:
        part = (name, f) if content_type is None else (name, f, content_type)
        response = client.post("/analyze", files={"file": part})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job
    result = job["result"]
    # Snippets are placed by their frames' own times: in order, never overlapping, start <= end.
    snippets = result["snippets"]
    assert all(s["start_s"] <= s["end_s"] for s in snippets)
    assert all(a["end_s"] < b["start_s"] for a, b in itertools.pairwise(snippets))
    return result


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    if not FIELD.is_dir():
        pytest.skip(f"field inputs not found at {FIELD}")
    # The field files (up to 2.5 MB) fit the 8 MiB limit; all are short enough to be answered synchronously.
    server = ServerProcess(
        tmp_path_factory.mktemp("field") / "data", env={"REFINEVAD_MAX_UPLOAD_MB": "8"}
    ).start()
    try:
        with server.client() as c:
            yield c
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("dvr_export_raw.h264", None),
        ("CAM01_20260301", "application/octet-stream"),
        ("clip.264", "text/plain"),
    ],
)
def test_raw_h264_export_is_accepted_by_content(
    client: httpx.Client, filename: str, content_type: str | None
) -> None:
    result = analyze(client, FIELD / "dvr_export_raw.h264", filename, content_type)
    decode = result["decode"]
    assert decode["frames_decoded"] == 120 and decode["frames_announced"] is None
    assert decode["clock"] == "assumed_rate" and result["video"]["fps"] == pytest.approx(25.0)
    assert result["num_snippets"] == 8


def test_encoder_restart_is_analysed_with_its_jump_reported(client: httpx.Client) -> None:
    result = analyze(client, FIELD / "encoder_restart.ts")
    decode = result["decode"]
    assert decode["frames_decoded"] == 200 and result["video"]["duration_s"] == pytest.approx(8.0)
    [jump] = decode["timestamp_jumps"]
    assert jump["frame"] == 100 and jump["from_s"] > 1000 and jump["to_s"] < 20
    assert result["snippets"][-1]["end_s"] == pytest.approx(7.96)


def test_variable_frame_rate_snippets_are_placed_by_timestamps(client: httpx.Client) -> None:
    result = analyze(client, FIELD / "phone_vfr.mp4")
    third = result["snippets"][3]  # frames 48-63
    assert (third["start_s"], third["end_s"]) == pytest.approx((1.6, 2.6))
    assert result["video"]["duration_s"] == pytest.approx(7.0)
    assert result["decode"]["decode_errors"] == 0


def test_another_cameras_footage_is_flagged_and_raises_no_alarm(client: httpx.Client) -> None:
    result = analyze(client, FIELD / "phone_vfr.mp4")  # a phone's test pattern, nothing like the Ped2 walkway
    assert max(s["score"] for s in result["snippets"]) > 0.5  # the head alone would raise an alarm
    scene = result["scene"]
    assert scene["familiar"] is False and scene["distance"] > scene["threshold"] > 0
    assert scene["snippets"] == result["num_snippets"]
    assert result["events"] == [] and "UNFAMILIAR SCENE" in result["scene_warning"]
    assert client.get("/ready").json()["model"]["scene_threshold"] == scene["threshold"]


def test_truncated_upload_says_so(client: httpx.Client) -> None:
    result = analyze(client, FIELD / "truncated_upload.mp4")
    decode = result["decode"]
    assert decode["truncated"] is True and decode["frames_announced"] == 250
    assert decode["frames_decoded"] == result["frames"] < 120


def test_resolution_switch_is_reported(client: httpx.Client) -> None:
    result = analyze(client, FIELD / "resolution_switch.ts")
    changes = [(c["frame"], c["width"], c["height"]) for c in result["decode"]["geometry_changes"]]
    assert changes == [(75, 960, 720), (150, 1280, 720)]
    assert (result["video"]["width"], result["video"]["height"]) == (1280, 720)


def test_packet_loss_marks_degraded_snippets(client: httpx.Client) -> None:
    result = analyze(client, FIELD / "hevc_packet_loss.ts")
    decode = result["decode"]
    assert decode["decode_errors"] > 20 and decode["lost_frames"] == 3
    degraded = [s["degraded"] for s in result["snippets"]]
    assert any(degraded) and not all(degraded)
    for event in result["events"]:
        assert not all(degraded[event["start_snippet"] : event["end_snippet"]])


def test_what_is_not_video_gets_415_whatever_its_name(client: httpx.Client) -> None:
    response = client.post(
        "/analyze", files={"file": ("clip.mp4", b"%PDF-1.4 a document, not a video\n" * 100, "video/mp4")}
    )
    body = assert_error(response, 415, "not_video")
    assert "clip.mp4" in body["message"]
