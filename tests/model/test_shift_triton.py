"""The fused Triton shift against the tensor-op reference (on CUDA, or on the CPU via Triton's interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from model.shift import adaptive_temporal_shift
from model.shift_triton import INTERPRET, adaptive_temporal_shift_auto, fused_adaptive_temporal_shift

ROOT = Path(__file__).resolve().parents[2]

# Runs with TRITON_INTERPRET=1, which must be set before Triton compiles the kernel, hence a subprocess.
CHECK = textwrap.dedent(
    """
    import torch
    from model.shift import adaptive_temporal_shift
    from model.shift_triton import adaptive_temporal_shift_auto, fused_adaptive_temporal_shift

    gen = torch.Generator().manual_seed(0)
    # T = 1 (both neighbours are padding), odd D across block edges, s = 0 and the largest s = D // 2.
    for b, t, d in [(1, 1, 8), (2, 5, 300), (3, 32, 512), (1, 7, 257)]:
        x = torch.randn(b, t, d, generator=gen)
        for shift in (
            torch.randint(0, d // 2 + 1, (b, t), generator=gen),
            torch.zeros(b, t, dtype=torch.long),
            torch.full((b, t), d // 2, dtype=torch.long),
        ):
            assert torch.equal(fused_adaptive_temporal_shift(x, shift), adaptive_temporal_shift(x, shift)), (b, t, d)
    # With a gradient needed the dispatcher keeps the differentiable reference.
    x = torch.randn(2, 4, 16, requires_grad=True)
    assert adaptive_temporal_shift_auto(x, torch.ones(2, 4, dtype=torch.long)).grad_fn is not None
    print("ok")
    """
)


def test_fused_kernel_matches_reference_in_triton_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


@pytest.mark.skipif(INTERPRET, reason="interpreter mode runs the kernel on CPU tensors")
def test_cpu_tensors_use_the_reference():
    x = torch.randn(2, 6, 40)
    shift = torch.randint(0, 21, (2, 6))
    assert torch.equal(adaptive_temporal_shift_auto(x, shift), adaptive_temporal_shift(x, shift))
    with pytest.raises(RuntimeError, match="needs Triton and a CUDA tensor"):
        fused_adaptive_temporal_shift(x, shift)


@pytest.mark.cuda
def test_fused_kernel_matches_reference_on_cuda():
    pytest.importorskip("triton")
    x = torch.randn(64, 32, 768, device="cuda")
    shift = torch.randint(0, 97, (64, 32), device="cuda")
    assert torch.equal(fused_adaptive_temporal_shift(x, shift), adaptive_temporal_shift(x, shift))
    with torch.inference_mode():
        assert torch.equal(adaptive_temporal_shift_auto(x, shift), adaptive_temporal_shift(x, shift))
