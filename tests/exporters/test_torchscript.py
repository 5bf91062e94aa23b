from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from exporters.metadata import OUTPUT_NAMES, sidecar_path
from exporters.torchscript import jit_deprecation_silenced, load_torchscript, script_head
from model.checkpoint import load_checkpoint
from model.motar import MoTAR
from tests.exporters.conftest import CONFIGS, MAX_SNIPPETS, SHAPES, features, make_checkpoint
from tests.exporters.parity import assert_matches_eager


def test_torchscript_matches_eager_for_every_batch_and_length(checkpoint_path: Path, torchscript_path: Path):
    eager = load_checkpoint(checkpoint_path).model
    module, metadata = load_torchscript(torchscript_path)
    for batch, snippets in SHAPES:
        x = features(batch, snippets, metadata.feature_dim)
        with torch.inference_mode():
            got = dict(zip(OUTPUT_NAMES, module(x), strict=True))
            want = eager(x)
        assert_matches_eager(got, want, f"torchscript B={batch} T={snippets}")


def test_torchscript_metadata_is_embedded_and_beside(checkpoint_path: Path, torchscript_path: Path):
    loaded = load_checkpoint(checkpoint_path)
    _, metadata = load_torchscript(torchscript_path)
    assert metadata.kind == "torchscript"
    assert metadata.config == loaded.config
    assert metadata.category_names == loaded.config.category_names
    assert metadata.feature_dim == loaded.config.feature_dim
    assert metadata.backbone == loaded.backbone
    assert metadata.max_snippets == MAX_SNIPPETS
    assert metadata.source_sha256 == loaded.sha256
    assert metadata.checkpoint_metadata["seed"] == 0
    beside = json.loads(sidecar_path(torchscript_path).read_text())
    assert beside == json.loads(metadata.to_json())


def test_frozen_graph_has_no_loops_or_host_syncs(tmp_path: Path):
    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "head.pt", CONFIGS["default"]))
    graph = script_head(checkpoint).graph.str()
    assert "prim::Loop" not in graph
    assert "aten::item" not in graph
    assert "aten::floor" in graph  # the shift is in the graph, computed on the device


def test_scripted_shift_has_no_loop_over_time():
    # Unfrozen: the inlined graph of MoTAR (shift predictor, shift, Transformer) as the script compiler sees it.
    motar = MoTAR(CONFIGS["default"]).eval()
    with jit_deprecation_silenced():
        graph = torch.jit.script(motar).inlined_graph.str()
    assert "prim::Loop" not in graph
    assert "aten::item" not in graph
    assert "aten::where" in graph


def test_load_rejects_torchscript_without_metadata(tmp_path: Path):
    path = tmp_path / "plain.ts"
    with jit_deprecation_silenced():
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(path))
    with pytest.raises(ValueError, match="without RefineVAD export metadata"):
        load_torchscript(path)
