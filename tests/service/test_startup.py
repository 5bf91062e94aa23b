"""Start-up behaviour of the real server: a model that cannot load, CORS, the OpenAPI document without a key."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import assert_error, upload_video

pytestmark = pytest.mark.integration


def test_a_model_that_cannot_load_keeps_health_up_and_says_why(
    make_server, footage: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-checkpoint.pt"
    server = make_server(env={"REFINEVAD_MODEL_CHECKPOINT": str(missing)}).start(until="/health")
    with server.client() as client:
        deadline = time.monotonic() + 60
        while (ready := client.get("/ready")).json()["state"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["state"] == "failed"
        assert "no-such-checkpoint" in body["error"]
        refused = assert_error(upload_video(client, footage["short"]), 503, "model_failed")
        assert "no-such-checkpoint" in refused["message"]
        assert client.get("/jobs").json()["total"] == 0
    assert "MODEL FAILED TO LOAD" in server.log_tail(20000)


def test_configured_cors_and_video_limits_apply(make_server, footage: dict[str, Path]) -> None:
    origin = "https://console.example"
    env = {
        "REFINEVAD_CORS_ORIGINS": origin,
        "REFINEVAD_MAX_VIDEO_FRAMES": "50",
        "REFINEVAD_MAX_VIDEO_PIXELS": "90000",
    }
    server = make_server(env=env).start()
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        preflight = anon.options(
            "/jobs",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "X-API-Key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        listed = anon.get("/jobs", headers={"Origin": origin, **server.headers})
        assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == origin
        other = anon.get("/jobs", headers={"Origin": "https://evil.example", **server.headers})
        assert "access-control-allow-origin" not in other.headers
    # 360x240 = 86400 pixels pass; 80 frames exceed the 50-frame limit and are refused before any analysis.
    with server.client() as client:
        refused = assert_error(upload_video(client, footage["short"]), 422, "invalid_video")
        assert "50" in refused["message"]
        assert client.get("/jobs").json()["total"] == 0
    assert list((server.data_dir / "uploads").iterdir()) == []
