"""`refinevad extract` takes the service's backbone path: on a CPU the EfficientNet-Lite0 appearance network runs in
ONNX Runtime after its start-up check, and `--eager` keeps the fp32 reference; both store the same features to
within the check's tolerance. Footage: UCSD Ped2 (read in place)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cli.main import main
from model.data.feature_store import FeatureStore
from tests.footage import encode_ped2_clip


def served_by(caplog) -> str:
    [line] = [
        r.getMessage()
        for r in caplog.records
        if "served by" in r.getMessage() and "backbone" in r.getMessage()
    ]
    return line


def test_extract_runs_the_checked_onnx_runtime_path_unless_eager(tmp_path: Path, caplog) -> None:
    video = encode_ped2_clip(tmp_path / "walk.mp4", clip="testing/frames/01", max_frames=32)
    argv = [
        "extract",
        "--videos",
        str(video),
        "--backbone",
        "efficientnet_lite0",
        "--device",
        "cpu",
        "--no-progress",
    ]
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--out", str(tmp_path / "fast")]) == 0
    assert "served by onnxruntime (CPUExecutionProvider)" in served_by(caplog)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--out", str(tmp_path / "eager"), "--eager"]) == 0
    assert "served by fp32 (the backbone runs its reference path" in served_by(caplog)
    fast, eager = FeatureStore.open(tmp_path / "fast"), FeatureStore.open(tmp_path / "eager")
    assert fast.manifest.backbone == eager.manifest.backbone  # the same features, whichever path made them
    a, b = fast.load("walk"), eager.load("walk")
    assert a.shape == b.shape == (2, 320)
    assert not np.array_equal(a, b)  # computed another way ...
    relative = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    assert relative.max() < 1e-4  # ... to the same values


def test_eager_refuses_a_reduced_precision(tmp_path: Path, caplog) -> None:
    argv = ["extract", "--videos", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "o"), "--eager"]
    assert main([*argv, "--precision", "fp16"]) == 2
    assert "--eager extracts with the fp32 reference" in caplog.text
    assert not (tmp_path / "o").exists()
