from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from exporters.backends import (
    HEAD_KINDS,
    OnnxHeadBackend,
    TorchHeadBackend,
    TorchScriptHeadBackend,
    load_head_backend,
)
from model.checkpoint import load_checkpoint
from tests.exporters.conftest import CONFIGS, MAX_SNIPPETS, SHAPES, features, make_checkpoint
from tests.exporters.parity import ATOL, assert_matches_eager


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("backends") / "head.pt", CONFIGS["topk_hard"], seed=3)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-cache")


def test_all_backends_give_the_same_outputs(small_checkpoint: Path, cache_dir: Path):
    backends = {
        kind: load_head_backend(kind, small_checkpoint, "cpu", cache_dir=cache_dir, max_snippets=MAX_SNIPPETS)
        for kind in HEAD_KINDS
    }
    assert isinstance(backends["torch"], TorchHeadBackend)
    assert isinstance(backends["torchscript"], TorchScriptHeadBackend)
    assert isinstance(backends["onnx"], OnnxHeadBackend)
    eager = load_checkpoint(small_checkpoint).model
    for batch, snippets in SHAPES:
        x = features(batch, snippets, eager.config.feature_dim, seed=7)
        with torch.inference_mode():
            want = eager(x)
        outputs = {kind: backend(x) for kind, backend in backends.items()}
        for kind, out in outputs.items():
            assert set(out) == {"scores", "category_probs", "category_weights", "logits"}
            assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in out.values())
            assert_matches_eager(out, want, f"{kind} B={batch} T={snippets}")
        for name, tensor in outputs["onnx"].items():
            assert torch.allclose(tensor, outputs["torchscript"][name], atol=ATOL, rtol=0)


def test_backend_metadata_describes_the_checkpoint(small_checkpoint: Path, cache_dir: Path):
    loaded = load_checkpoint(small_checkpoint)
    for kind in HEAD_KINDS:
        backend = load_head_backend(kind, small_checkpoint, cache_dir=cache_dir, max_snippets=MAX_SNIPPETS)
        assert backend.metadata.kind == kind
        assert backend.metadata.backbone == loaded.backbone
        assert backend.category_names == loaded.config.category_names
        assert backend.feature_dim == loaded.config.feature_dim
        assert backend.max_snippets == MAX_SNIPPETS
    assert load_head_backend(
        "onnx", small_checkpoint, cache_dir=cache_dir, max_snippets=MAX_SNIPPETS
    ).metadata.opset


def test_exports_are_cached_by_checkpoint_and_settings(small_checkpoint: Path, cache_dir: Path):
    load_head_backend("torchscript", small_checkpoint, cache_dir=cache_dir, max_snippets=MAX_SNIPPETS)
    (cached,) = cache_dir.glob("*T256*.ts")
    stamp = cached.stat().st_mtime_ns
    backend = load_head_backend(
        "torchscript", small_checkpoint, cache_dir=cache_dir, max_snippets=MAX_SNIPPETS
    )
    assert cached.stat().st_mtime_ns == stamp  # reused, not re-exported
    assert backend.path == cached
    # Another max T is another export.
    load_head_backend("torchscript", small_checkpoint, cache_dir=cache_dir, max_snippets=64)
    assert len(list(cache_dir.glob("*.ts"))) == 2


def test_exported_files_load_directly(small_checkpoint: Path, tmp_path: Path, cache_dir: Path):
    onnx_file = (
        next(cache_dir.glob("*.onnx"), None)
        or load_head_backend("onnx", small_checkpoint, cache_dir=cache_dir, max_snippets=MAX_SNIPPETS).path
    )
    ts_file = next(cache_dir.glob("*T256*.ts"))
    x = features(2, 9, CONFIGS["topk_hard"].feature_dim)
    a = load_head_backend("onnx", onnx_file)(x)
    b = load_head_backend("torchscript", ts_file)(x)
    assert torch.allclose(a["scores"], b["scores"], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="cannot run on the torchscript backend"):
        load_head_backend("torchscript", onnx_file)


def test_backends_reject_bad_inputs(small_checkpoint: Path, cache_dir: Path):
    dim = CONFIGS["topk_hard"].feature_dim
    for kind in HEAD_KINDS:
        backend = load_head_backend(kind, small_checkpoint, cache_dir=cache_dir, max_snippets=MAX_SNIPPETS)
        with pytest.raises(ValueError, match="expects"):
            backend(torch.randn(1, 4, dim + 1))
        with pytest.raises(ValueError, match="T <= 256"):
            backend(torch.randn(1, MAX_SNIPPETS + 1, dim))
        assert backend(torch.randn(1, MAX_SNIPPETS, dim))["logits"].shape == (1, MAX_SNIPPETS)
        with pytest.raises(ValueError, match=r"\[B, T, D\]"):
            backend(torch.randn(4, dim))
        with pytest.raises(ValueError, match="floating point"):
            backend(torch.ones(1, 4, dim, dtype=torch.long))
        # Half precision and non-contiguous inputs are accepted and cast.
        assert backend(torch.randn(dim, 4, 1).permute(2, 1, 0).half())["scores"].shape == (1, 4)


def test_unknown_backend_and_missing_checkpoint(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown head backend"):
        load_head_backend("tensorrt", tmp_path / "x.pt")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load_head_backend("onnx", tmp_path / "missing.pt", cache_dir=tmp_path)
    assert not os.listdir(tmp_path)
