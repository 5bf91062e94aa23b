"""`bench.synthetic_streams` runs the service's real reader, scheduler and publishers on in-process cameras."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.synthetic_streams import main


@pytest.mark.integration
def test_synthetic_cameras_are_scored_through_the_live_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.json"
    args = ["--device", "cpu", "--backbone", "default", "--steps", "1", "--width", "160", "--height", "120"]
    assert main([*args, "--warmup-s", "3", "--measure-s", "3", "--p95-goal-s", "30", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (step,) = report["steps"]
    # Snippets flowed: messages were published and their capture-to-message latency measured.
    assert step["messages"] > 0 and step["latency_p95_s"] is not None and step["latency_p95_s"] > 0
    assert step["processed_fps_per_stream"] > 0
    assert report["acceleration"] is not None
