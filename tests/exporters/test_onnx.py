from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from exporters.metadata import DEFAULT_OPSET, INPUT_NAME, METADATA_KEY, sidecar_path
from exporters.onnx import control_flow_ops, default_opset, export_onnx, read_onnx_metadata
from model.checkpoint import load_checkpoint
from tests.exporters.conftest import CONFIGS, MAX_SNIPPETS, SHAPES, features, make_checkpoint
from tests.exporters.parity import assert_matches_eager


def test_onnx_matches_eager_for_every_batch_and_length(checkpoint_path: Path, onnx_path: Path):
    eager = load_checkpoint(checkpoint_path).model
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for batch, snippets in SHAPES:
        x = features(batch, snippets, eager.config.feature_dim)
        got = {
            n: torch.from_numpy(v)
            for n, v in zip(names, session.run(None, {INPUT_NAME: x.numpy()}), strict=True)
        }
        with torch.inference_mode():
            want = eager(x)
        assert_matches_eager(got, want, f"onnx B={batch} T={snippets}")


def test_onnx_graph_is_loop_free_with_dynamic_batch_and_time(onnx_path: Path):
    model = onnx.load(str(onnx_path))
    assert not control_flow_ops(model)
    assert not any(node.op_type in {"Loop", "If", "Scan"} for node in model.graph.node)
    (features_input,) = model.graph.input
    dims = features_input.type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:2]] == ["batch", "snippets"]
    assert dims[2].dim_value > 0
    for output in model.graph.output:
        assert output.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_onnx_metadata_is_embedded_and_beside(checkpoint_path: Path, onnx_path: Path):
    loaded = load_checkpoint(checkpoint_path)
    metadata = read_onnx_metadata(onnx_path)
    model = onnx.load(str(onnx_path))
    assert metadata.opset == default_opset(model) == DEFAULT_OPSET
    assert metadata.config == loaded.config
    assert metadata.backbone == loaded.backbone
    assert metadata.category_names == loaded.config.category_names
    assert metadata.max_snippets == MAX_SNIPPETS
    assert metadata.source_sha256 == loaded.sha256
    embedded = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert json.loads(sidecar_path(onnx_path).read_text()) == embedded


def test_onnx_export_refuses_opsets_it_cannot_emit(tmp_path: Path):
    # Opsets 18+ are exported and recorded (test_export_cli checks 19); older ones fail before exporting.
    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "head.pt", CONFIGS["no_motar_uniform"]))
    with pytest.raises(ValueError, match="opset 17 is not supported"):
        export_onnx(checkpoint, tmp_path / "head.onnx", opset=17)
    assert not (tmp_path / "head.onnx").exists()


def test_read_metadata_rejects_foreign_onnx(tmp_path: Path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="without RefineVAD export metadata"):
        read_onnx_metadata(path)
