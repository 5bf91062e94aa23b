"""The real server with broken accelerated paths injected through its plugin setting (shift kernels, a head, a
backbone runtime): it bypasses them, keeps
serving on the reference paths, and says so under `/ready` and in `/metrics`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import upload_video

pytestmark = pytest.mark.integration


def test_broken_paths_are_bypassed_and_a_passing_kernel_serves(make_server, footage: dict[str, Path]) -> None:
    env = {
        "REFINEVAD_ACCEL_PLUGINS": "tests.accel_faults",
        "REFINEVAD_HEAD_BACKEND": "test-offset",  # scores 0.05 too high: must not serve
        # A raising kernel, a wrong one, then the real Triton kernel (in Triton's CPU interpreter): it passes.
        "REFINEVAD_ACCEL_SHIFT_KERNELS": "test-raising,test-swapped,triton",
        "TRITON_INTERPRET": "1",
        # Features with 10% noise, then ONNX Runtime for the appearance network: it passes.
        "REFINEVAD_ACCEL_BACKBONE_RUNTIMES": "test-noisy,onnxruntime",
    }
    server = make_server(env=env).start(timeout=120)
    with server.client() as client:
        ready = client.get("/ready").json()
        acceleration = ready["acceleration"]
        head, shift, backbone = acceleration["head"], acceleration["shift"], acceleration["backbone"]
        assert (head["path"], head["accelerated"], head["reason_code"]) == ("torch", False, "mismatch")
        assert "beyond the tolerance" in head["reason"]
        assert [(c["name"], c["outcome"]) for c in shift["checks"]] == [
            ("test-raising", "error"),
            ("test-swapped", "mismatch"),
            ("triton", "passed"),
        ]
        assert (shift["path"], shift["accelerated"]) == ("triton", True)
        assert [(c["name"], c["outcome"]) for c in backbone["checks"]] == [
            ("test-noisy", "mismatch"),
            ("onnxruntime (CPUExecutionProvider)", "passed"),
        ]
        assert (backbone["path"], backbone["reference"], backbone["accelerated"]) == (
            "onnxruntime (CPUExecutionProvider)",
            "fp32",
            True,
        )

        metrics = client.get("/metrics").text
        assert (
            'refinevad_acceleration_path{accelerated="false",path="torch",reason="mismatch",stage="head"} 1.0'
            in metrics
        )
        assert (
            'refinevad_acceleration_path{accelerated="true",path="triton",reason="passed",stage="shift"} 1.0'
            in metrics
        )
        assert (
            'refinevad_acceleration_check_error{candidate="test-swapped",outcome="mismatch",stage="shift"}'
            in metrics
        )
        assert (
            'refinevad_acceleration_path{accelerated="true",path="onnxruntime (CPUExecutionProvider)",'
            'reason="passed",stage="backbone"} 1.0' in metrics
        )

        # It keeps serving: a real upload is analysed with the eager head, the Triton shift and the ONNX Runtime
        # appearance network.
        response = upload_video(client, footage["short"])
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "succeeded" and job["result"]["snippets"]
    log = server.log_tail(200000)
    assert "head stage falls back to its reference path: test-offset mismatch" in log


def test_a_raising_head_backend_is_bypassed(make_server) -> None:
    env = {"REFINEVAD_ACCEL_PLUGINS": "tests.accel_faults", "REFINEVAD_HEAD_BACKEND": "test-raising"}
    server = make_server(env=env).start(timeout=120)
    with server.client() as client:
        head = client.get("/ready").json()["acceleration"]["head"]
        assert (head["path"], head["reason_code"]) == ("torch", "error")
        assert "illegal memory access" in head["reason"]
