"""The bench's parity part: every accelerated path checked against its reference, as the service does."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.suite import Inputs, Sizes, machine_info, part_parity, render_markdown
from model.shift_kernels import SHIFT_KERNELS


def test_parity_part_reports_every_candidate_on_the_cpu(tmp_path: Path) -> None:
    sizes = Sizes(
        clip_pipeline_arch="ViT-S-32",
        clip_pipeline_sampled=2,
        parity_head_backends=["torchscript", "onnx-tensorrt"],
    )
    parity = part_parity(torch.device("cpu"), sizes, Inputs(tmp_path, sizes))
    rows = {(r["stage"], r["candidate"]): r for r in parity["paths"]}
    assert {c for s, c in rows if s == "shift"} == set(SHIFT_KERNELS)
    assert rows["shift", "triton"]["outcome"] == "unavailable"
    torchscript = rows["head", "torchscript"]
    assert torchscript["outcome"] == "passed" and torchscript["max_error"] < 1e-4
    assert rows["head", "onnx-tensorrt"]["outcome"] == "error"
    bf16 = rows["backbone", "clip ViT-S-32 (random weights) bf16"]
    assert bf16["outcome"] == "passed" and 0 < bf16["max_error"] <= bf16["tolerance"]
    # EfficientNet-Lite0 in bf16 drifts beyond the tolerance on the CPU (see tests/model/test_acceleration.py).
    assert rows["backbone", "efficientnet_lite0 bf16"]["outcome"] == "mismatch"
    results = {
        "mode": "quick",
        "created_at": "now",
        "machine": machine_info(torch.device("cpu")),
        "load_average_before": [0.0],
        "parts": {"parity": parity},
        "errors": {},
    }
    markdown = render_markdown(results)
    assert (
        "## 6. Accelerated paths vs reference" in markdown and "| head | torchscript | passed |" in markdown
    )
