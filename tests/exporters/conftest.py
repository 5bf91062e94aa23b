"""Checkpoints and exports shared by the exporter tests (exports take seconds, so they are made once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exporters.onnx import export_onnx
from exporters.torchscript import export_torchscript
from model.backbones.identity import BackboneIdentity
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import RefineVADConfig
from model.refinevad import RefineVAD

# Three heads that between them cover every switch the exported graph depends on: the default (D=512, weighted
# pooling, soft weights, cross-attention, attention over the whole clip), top-k pooling with hard top-1 weights, a
# threshold every category passes and a sliding-window attention mask, and a head without MoTAR whose threshold
# no category reaches (the uniform 1/C branch).
CONFIGS: dict[str, RefineVADConfig] = {
    "default": RefineVADConfig(),
    "topk_hard": RefineVADConfig(
        feature_dim=64,
        category_names=["Biking", "Vehicle", "Skateboarding", "Running"],
        transformer_ff=128,
        proj_dim=32,
        emb_dim=8,
        classifier_hidden=16,
        pooling="topk",
        soft_weights=False,
        tau=0.0,
        injection="addnorm_ffn",
        attention_window=2,
    ),
    "no_motar_uniform": RefineVADConfig(
        feature_dim=48,
        category_names=["a", "b", "c"],
        use_motar=False,
        proj_dim=16,
        emb_dim=8,
        classifier_hidden=16,
        tau=1.0,
        injection="linear",
    ),
}
# T = 1, a few, the training length, one past it and far past it.
SHAPES: list[tuple[int, int]] = [(1, 1), (2, 2), (3, 5), (2, 32), (1, 33), (2, 200)]
MAX_SNIPPETS = 256


def make_checkpoint(path: Path, config: RefineVADConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = RefineVAD(config)
    # Non-trivial BatchNorm statistics, so a graph that mishandled eval-mode BatchNorm would show it.
    norm = model.core.projector.norm
    norm.running_mean.normal_(0.0, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    identity = BackboneIdentity(name="test", architecture="random", weights="random", dim=config.feature_dim)
    return save_checkpoint(path, model, identity, {"trained": False, "seed": seed})


def features(batch: int, snippets: int, dim: int, seed: int = 1) -> torch.Tensor:
    """Random features whose scale changes along time, so the shift sizes s_t differ between snippets."""
    gen = torch.Generator().manual_seed(seed * 1000 + batch * 100 + snippets)
    scale = torch.rand(batch, snippets, 1, generator=gen) * 3
    return torch.randn(batch, snippets, dim, generator=gen) * scale


@pytest.fixture(scope="session", params=sorted(CONFIGS))
def checkpoint_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp(request.param) / "head.pt", CONFIGS[request.param])


@pytest.fixture(scope="session")
def torchscript_path(checkpoint_path: Path) -> Path:
    out = checkpoint_path.with_suffix(".ts")
    export_torchscript(load_checkpoint(checkpoint_path), out, max_snippets=MAX_SNIPPETS)
    return out


@pytest.fixture(scope="session")
def onnx_path(checkpoint_path: Path) -> Path:
    out = checkpoint_path.with_suffix(".onnx")
    export_onnx(load_checkpoint(checkpoint_path), out, max_snippets=MAX_SNIPPETS)
    return out
