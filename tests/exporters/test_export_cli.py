"""`refinevad export` end to end through the CLI entry point."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from cli.main import main
from exporters.metadata import ExportMetadata, sidecar_path
from exporters.onnx import read_onnx_metadata
from exporters.torchscript import load_torchscript
from tests.exporters.conftest import CONFIGS, make_checkpoint


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "head.pt", CONFIGS["no_motar_uniform"])


def test_export_torchscript_default_name(checkpoint: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["export", "--format", "torchscript", str(checkpoint), "--max-T", "100"]) == 0
    out = checkpoint.with_suffix(".ts")
    module, metadata = load_torchscript(out)
    assert metadata.max_snippets == 100 and metadata.opset is None
    assert ExportMetadata.model_validate_json(sidecar_path(out).read_text()) == metadata
    assert module(torch.randn(2, 3, metadata.feature_dim))[0].shape == (2, 3)
    assert str(out) in capsys.readouterr().out


def test_export_onnx_with_opset_and_out(checkpoint: Path, tmp_path: Path):
    out = tmp_path / "exports" / "head.onnx"
    assert main(["export", "--format", "onnx", str(checkpoint), "--out", str(out), "--opset", "19"]) == 0
    metadata = read_onnx_metadata(out)
    assert metadata.opset == 19
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (scores, *_rest) = session.run(None, {"features": torch.randn(1, 7, metadata.feature_dim).numpy()})
    assert scores.shape == (1, 7)


def test_export_reports_bad_checkpoint(tmp_path: Path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--format", "onnx", str(bad)]) == 2
    assert main(["export", "--format", "onnx", str(tmp_path / "missing.pt")]) == 2
    good = make_checkpoint(tmp_path / "good.pt", CONFIGS["no_motar_uniform"])
    assert main(["export", "--format", "onnx", str(good), "--opset", "17"]) == 2
    assert main(["export", "--format", "torchscript", str(good), "--max-T", "1"]) == 2
    assert main(["export", "--format", "onnx"]) == 2  # neither a checkpoint nor --clip-arch
    assert main(["export", "--format", "torchscript", "--clip-arch", "ViT-B-32"]) == 2
    assert (
        main(["export", "--format", "onnx", "--clip-arch", "no-such-arch", "--clip-pretrained", "none"]) == 2
    )
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.ts"))
