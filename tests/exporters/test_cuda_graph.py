"""The `cuda-graph` head backend: batch buckets, the padding it relies on, refusal off CUDA, parity on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exporters.backends import (
    CUDA_GRAPH,
    CudaGraphHeadBackend,
    batch_bucket,
    head_backend_kinds,
    load_head_backend,
)
from exporters.head import InferenceHead
from model.acceleration import AccelerationPolicy
from model.checkpoint import load_checkpoint
from model.inference import AnalysisEngine, EngineConfig
from tests.exporters.conftest import CONFIGS, MAX_SNIPPETS, make_checkpoint


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(
        tmp_path_factory.mktemp("graph") / f"{request.param}.pt", CONFIGS[request.param], seed=5
    )


def test_batches_are_served_by_power_of_two_buckets() -> None:
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 8, 9, 64, 65, 100)] == [
        1,
        2,
        4,
        4,
        8,
        8,
        16,
        64,
        128,
        128,
    ]
    assert CUDA_GRAPH in head_backend_kinds()


def test_zero_padded_rows_leave_every_real_row_unchanged(checkpoint: Path) -> None:
    """What the backend relies on: at inference the head treats each video of a batch on its own."""
    head = InferenceHead(load_checkpoint(checkpoint).model).eval()
    dim = head.model.config.feature_dim
    x = torch.randn(3, 11, dim, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([x, torch.zeros(5, 11, dim)])
    with torch.inference_mode():
        for alone, in_bucket in zip(head(x), head(padded), strict=True):
            torch.testing.assert_close(in_bucket[:3], alone, rtol=1e-5, atol=1e-6)


def test_off_cuda_it_is_refused_and_the_engine_serves_the_eager_head(
    checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="CUDA graphs need a CUDA device"):
        load_head_backend(CUDA_GRAPH, checkpoint, "cpu")
    with pytest.raises(RuntimeError, match="CUDA graphs need a CUDA device"):
        CudaGraphHeadBackend(InferenceHead(load_checkpoint(checkpoint).model), None, torch.device("cpu"))  # type: ignore[arg-type]
    config = EngineConfig(device="cpu", motion_threads=1, head_backend=CUDA_GRAPH, export_cache_dir=tmp_path)
    head = AnalysisEngine.from_config(config).acceleration.head
    assert (head.path, head.reason_code) == ("torch", "error") and "CUDA graphs" in head.reason


@pytest.mark.cuda
def test_on_cuda_graph_replays_match_the_eager_head(checkpoint: Path) -> None:
    graphs = load_head_backend(CUDA_GRAPH, checkpoint, "cuda", max_snippets=MAX_SNIPPETS)
    eager = load_head_backend("torch", checkpoint, "cuda", max_snippets=MAX_SNIPPETS)
    dim = graphs.feature_dim
    generator = torch.Generator().manual_seed(1)
    for batch, snippets in [(1, 32), (3, 32), (5, 7), (64, 32), (3, 32)]:
        x = torch.randn(batch, snippets, dim, generator=generator).cuda()
        got, want = graphs(x), eager(x)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)
    assert isinstance(graphs, CudaGraphHeadBackend)
    assert set(graphs._graphs) == {(1, 32), (4, 32), (8, 7), (64, 32)}  # (3, 32) twice: one graph


@pytest.mark.cuda
def test_on_cuda_the_engine_checks_and_serves_graph_replays(tmp_path: Path) -> None:
    policy = AccelerationPolicy()
    config = EngineConfig(device="cuda", motion_threads=1, head_backend=CUDA_GRAPH, acceleration=policy)
    head = AnalysisEngine.from_config(config).acceleration.head
    assert (head.path, head.reason_code) == (CUDA_GRAPH, "passed"), head.reason
