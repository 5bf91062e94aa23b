from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import open_clip
import pytest
import torch

from exporters.clip_onnx import CLIP_INPUT_NAME, export_clip_backbone, read_clip_metadata
from exporters.onnx import control_flow_ops
from model.backbones.clip import ClipBackbone
from model.backbones.registry import BackboneConfig


@pytest.mark.integration
def test_clip_image_encoder_onnx_matches_eager_with_dynamic_batch(tmp_path: Path):
    torch.manual_seed(0)
    config = BackboneConfig(name="clip", clip_arch="ViT-B-32", clip_pretrained=None, clip_checkpoint=None)
    backbone = ClipBackbone.from_config(config, "cpu")  # random weights, fp32 on the CPU
    out = tmp_path / "clip.onnx"
    metadata = export_clip_backbone(backbone, out)
    assert metadata.backbone == backbone.identity
    assert metadata.image_size == (224, 224) and metadata.embedding_dim == 512
    assert metadata.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN, abs=1e-6)
    assert metadata.std == pytest.approx(open_clip.OPENAI_DATASET_STD, abs=1e-6)
    assert read_clip_metadata(out) == metadata
    assert not control_flow_ops(onnx.load(str(out)))

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        # The graph computes what the backbone computes from its preprocessed frames.
        frames = torch.randint(0, 256, (batch, 240, 320, 3), dtype=torch.uint8)
        images = backbone.preprocess(frames).float()
        (got,) = session.run(None, {CLIP_INPUT_NAME: images.numpy()})
        want = backbone.encode_frames(frames)
        assert got.shape == (batch, 512)
        # Embeddings have magnitude ~3; 1e-4 absolute is fp32 noise over 12 ViT blocks.
        assert (torch.from_numpy(got) - want).abs().max().item() < 1e-4
