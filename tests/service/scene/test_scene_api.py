"""The per-camera scene model through the real service: learning live and from uploads, calibrated scores on
every snippet, `?camera=` analysis, forgetting, restarts, operator feedback and bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.footage import PED2_ROOT, encode_ped2_clip
from tests.service.live.service_process import ServiceProcess

pytestmark = pytest.mark.integration

NORMAL = str(PED2_ROOT / "training" / "frames" / "01")


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scene-footage")
    return {
        "normal": encode_ped2_clip(root / "normal.mp4", "training/frames/02"),
        "anomalous": encode_ped2_clip(root / "anomalous.mp4", "testing/frames/02"),
        "unseen_normal": encode_ped2_clip(root / "unseen_normal.mp4", "training/frames/03"),
    }


def test_a_camera_learns_its_normal_and_keeps_it(tmp_path: Path, footage: dict[str, Path]) -> None:
    # 8 s of footage calibrate: the live replay of a normal clip gets there in a few snippets.
    service = ServiceProcess(tmp_path / "data", tmp_path / "service.log", scene_learn_s=8).start()
    try:
        with service.client() as client:
            sid = client.post("/streams", json={"url": NORMAL, "name": "walkway", "loop": True}).json()["id"]
            status = _wait(
                lambda: (s := client.get(f"/streams/{sid}/scene").json())["state"] == "calibrated" and s,
                90,
                "the live stream to calibrate its scene",
            )
            assert status["footage_s"] >= 8 and status["bank_vectors"] > 0 and status["bank_bytes"] > 0
            assert status["threshold"] > 0 and status["progress"] == 1.0 and status["descriptor"]
            # Uploaded normal footage counts too.
            learned = client.post(
                f"/streams/{sid}/scene/footage",
                files={"file": ("normal.mp4", footage["normal"].read_bytes())},
            )
            assert learned.status_code == 200, learned.text
            assert learned.json()["footage_s"] > status["footage_s"]
            # The file is scored with the camera's scene model: every snippet carries the three scores.
            with footage["anomalous"].open("rb") as f:
                analysed = client.post("/analyze", params={"camera": sid}, files={"file": ("a.mp4", f)})
            assert analysed.status_code == 200, analysed.text
            result = analysed.json()["result"]
            assert result["camera"] == sid and result["camera_scene"]["state"] == "calibrated"
            snippets = result["snippets"]
            assert all(s["scene_score"] is not None and 0 <= s["scene_score"] < 1 for s in snippets)
            assert all(s["score"] >= min(s["head_score"], s["scene_score"]) - 1e-9 for s in snippets)
            # A cyclist on the walkway is rarer than anything in normal footage the camera did not learn.
            with footage["unseen_normal"].open("rb") as f:
                normal = client.post("/analyze", params={"camera": sid}, files={"file": ("n.mp4", f)})
            normal_scores = [s["scene_score"] for s in normal.json()["result"]["snippets"]]
            assert max(s["scene_score"] for s in snippets) > max(normal_scores)
            # Without a camera: no scene score.
            with footage["anomalous"].open("rb") as f:
                plain = client.post("/analyze", files={"file": ("a.mp4", f)}).json()["result"]["snippets"]
            assert all(s["scene_score"] is None and s["score"] == s["head_score"] for s in plain)
            metrics = client.get("/metrics").text
            assert 'refinevad_scene_cameras{state="calibrated"} 1.0' in metrics
            # Bad input: clear errors, and the scene is untouched.
            before = client.get(f"/streams/{sid}/scene").json()["footage_s"]
            bad = client.post(
                f"/streams/{sid}/scene/footage", files={"file": ("x.mp4", b"not a video at all")}
            )
            assert bad.status_code == 415 and bad.json()["error"] == "not_video"
            assert client.post(f"/streams/{sid}/scene/footage", content=b"raw").status_code == 415
            assert client.get("/streams/nope/scene").status_code == 404
            assert (
                client.post("/analyze", params={"camera": "nope"}, files={"file": ("a", b"x")}).status_code
                == 404
            )
            assert client.post("/events/999999/feedback", json={"verdict": "false_alarm"}).status_code == 404
            assert client.post("/events/1/feedback", json={"verdict": "maybe"}).status_code == 422
            after = client.get(f"/streams/{sid}/scene").json()["footage_s"]
            assert after >= before
        # A restart keeps the camera's scene (saved in the database).
        service.stop()
        service.start()
        with service.client() as client:
            kept = client.get(f"/streams/{sid}/scene").json()
            assert kept["state"] == "calibrated" and kept["footage_s"] >= after
            assert client.delete(f"/streams/{sid}/scene").status_code == 204
            assert client.get(f"/streams/{sid}/scene").json()["state"] in ("none", "learning")
    finally:
        service.stop()


def test_a_false_alarm_is_learned_after_a_restart(tmp_path: Path) -> None:
    """The event's descriptors are stored with it when it closes: a verdict given after a restart (when the
    service no longer holds the footage) still teaches the camera."""
    service = ServiceProcess(tmp_path / "data", tmp_path / "service.log", scene_learn_s=3).start()
    always = {"enter_threshold": 0.0, "exit_threshold": 0.0, "min_duration_s": 0.0}
    try:
        with service.client() as client:
            # The clip plays once: its event ends with the footage.
            sid = client.post("/streams", json={"url": NORMAL, "name": "walkway", "events": always}).json()[
                "id"
            ]
            event = _wait(
                lambda: next(
                    iter(client.get("/events", params={"stream": sid, "status": "closed"}).json()["items"]),
                    None,
                ),
                90,
                "the event to close with the footage",
            )
            before = client.get(f"/streams/{sid}/scene").json()["pinned_snippets"]
        service.stop()
        service.start()
        with service.client() as client:
            verdict = client.post(f"/events/{event['id']}/feedback", json={"verdict": "false_alarm"})
            assert verdict.status_code == 200, verdict.text
            learned = verdict.json()["learned_snippets"]
            assert learned >= 1
            status = client.get(f"/streams/{sid}/scene").json()
            assert status["pinned_snippets"] == before + learned
            # Deleting the event deletes what it kept with it.
            assert client.delete(f"/events/{event['id']}").status_code == 204
            assert (
                client.post(f"/events/{event['id']}/feedback", json={"verdict": "false_alarm"}).status_code
                == 404
            )
    finally:
        service.stop()
