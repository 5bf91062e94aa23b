"""ONNX Runtime as the appearance network's runtime on CPUs: the same features as eager PyTorch on real Ped2
frames at every input size, one session per size, checked and selected by the engine at start-up."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exporters.appearance_onnx import (
    RUNTIME_NAME,
    OrtFeatureRunner,
    accelerate,
    export_feature_network,
    unavailable,
)
from model.acceleration import AccelerationPolicy, check_backbone
from model.backbones.efficientnet import EfficientNetLite0Backbone, FeatureNetwork
from model.backbones.motion import MotionBackbone
from model.backbones.two_stream import TwoStreamBackbone
from model.inference import AnalysisEngine, EngineConfig
from tests.footage import encode_ped2_clip, ped2_frame_files

LABEL = "onnxruntime (CPUExecutionProvider)"


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


@pytest.fixture(scope="module")
def snippets() -> np.ndarray:
    """Two real Ped2 snippets [2, 16, 240, 360, 3] uint8 RGB (testing clip 04, cyclist)."""
    files = ped2_frame_files("testing/frames/04", 32)
    frames = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    return frames.reshape(2, 16, *frames.shape[1:])


@pytest.fixture(scope="module")
def eager() -> EfficientNetLite0Backbone:
    return EfficientNetLite0Backbone("cpu")


def test_runner_matches_the_eager_network_at_every_size_with_one_session_per_size(
    eager: EfficientNetLite0Backbone, snippets: np.ndarray
) -> None:
    runner = OrtFeatureRunner(eager.feature_network(), threads=1, max_sizes=2)
    base = eager.preprocess(torch.from_numpy(snippets[0, :3]))
    # Ped2's 360x240 and odd sizes whose TF "same" padding differs (it depends on the size at every stride).
    for h, w in [(240, 360), (241, 301), (243, 362)]:
        pixels = base if (h, w) == (240, 360) else F.interpolate(base, size=(h, w), mode="bilinear")
        with torch.inference_mode():
            want = eager.map_pixels(pixels)
        got = runner(pixels)
        assert got.shape == want.shape
        assert relative_error(got.flatten(1), want.flatten(1)) < 1e-4
    # The least recently used size's session was dropped; each size passed its own check.
    assert runner.sizes == {(241, 301): "onnxruntime", (243, 362): "onnxruntime"}
    with pytest.raises(ValueError, match="float32 CPU pixels"):
        runner(pixels.half())


def _wrong_export(network: FeatureNetwork, height: int, width: int) -> bytes:
    """A real export of a miscompiled graph: the stem convolution's weights scaled by 1.5."""
    wrong = copy.deepcopy(network)
    with torch.no_grad():
        wrong.network.conv_stem.weight.mul_(1.5)
    return export_feature_network(wrong, height, width)


def _failing_export(network: FeatureNetwork, height: int, width: int) -> bytes:
    raise RuntimeError("the exporter does not support this graph")


@pytest.mark.parametrize("export", [_wrong_export, _failing_export])
def test_a_size_whose_session_fails_its_check_is_computed_by_eager_pytorch(
    eager: EfficientNetLite0Backbone, snippets: np.ndarray, export, caplog: pytest.LogCaptureFixture
) -> None:
    runner = OrtFeatureRunner(eager.feature_network(), threads=1, export=export)
    pixels = eager.preprocess(torch.from_numpy(snippets[0, :3]))
    with torch.inference_mode():
        want = eager.map_pixels(pixels)
    for _ in range(2):  # the failure is remembered: no second export
        assert torch.equal(runner(pixels), want)
    assert runner.sizes == {(240, 360): "eager"}
    assert sum("failed its check" in r.message for r in caplog.records) == 1


def test_concurrent_callers_of_new_and_known_sizes_all_get_the_eager_maps(
    eager: EfficientNetLite0Backbone, snippets: np.ndarray
) -> None:
    runner = OrtFeatureRunner(eager.feature_network(), threads=1)
    base = eager.preprocess(torch.from_numpy(snippets[0, :2]))
    inputs = [base, F.interpolate(base, size=(241, 301), mode="bilinear"), base, base[:1]]
    with torch.inference_mode():
        wants = [eager.map_pixels(x) for x in inputs]
    results: dict[int, torch.Tensor] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, runner(inputs[i])))
        for i in range(len(inputs))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == list(range(len(inputs)))
    for i, want in enumerate(wants):
        assert relative_error(results[i].flatten(1), want.flatten(1)) < 1e-4
    assert runner.sizes == {(240, 360): "onnxruntime", (241, 301): "onnxruntime"}


def test_two_stream_runtime_gives_the_same_features_and_owns_its_motion_stream(snippets: np.ndarray) -> None:
    reference = TwoStreamBackbone(EfficientNetLite0Backbone("cpu"), MotionBackbone("cpu"))
    accelerated = accelerate(reference)
    assert isinstance(accelerated, TwoStreamBackbone)
    assert accelerated.identity == reference.identity and accelerated.path == LABEL
    assert accelerated.motion is not reference.motion
    want = reference.encode_snippets(snippets)
    got = accelerated.encode_snippets(snippets)
    assert relative_error(got, want) < 1e-5
    # Its reference is the eager network again, sharing the weights.
    back = accelerated.reference_variant()
    assert back is not None and back.path == "fp32"
    assert back.appearance.network is accelerated.appearance.network
    # Closing the reference leaves the accelerated backbone working.
    reference.close()
    assert relative_error(accelerated.encode_snippets(snippets), want) < 1e-5


def test_says_why_it_cannot_run_other_backbones() -> None:
    assert "has none" in (unavailable(MotionBackbone("cpu")) or "")
    bf16 = EfficientNetLite0Backbone("cpu", precision="bf16")
    assert "not the bf16 one" in (unavailable(bf16) or "")
    with pytest.raises(ValueError, match="cannot run this backbone"):
        accelerate(bf16)


def test_check_selects_the_runtime_for_a_two_stream_backbone() -> None:
    backbone = TwoStreamBackbone(EfficientNetLite0Backbone("cpu"), MotionBackbone("cpu"))
    path, serving = check_backbone(backbone, sampled_frames=4, rtol=3e-2, runtimes=[RUNTIME_NAME])
    assert (path.path, path.reference, path.reason_code, path.accelerated) == (LABEL, "fp32", "passed", True)
    assert path.checks[0].max_error is not None and path.checks[0].max_error < 1e-4
    assert serving is not backbone and serving.path == LABEL
    assert backbone.appearance.network is None  # the eager reference object let go of the weights


@pytest.mark.integration
def test_the_default_engine_serves_the_runtime_with_the_eager_scores(tmp_path: Path) -> None:
    clip = encode_ped2_clip(tmp_path / "04.mp4", "testing/frames/04", max_frames=96)
    fast = AnalysisEngine.from_config(EngineConfig(device="cpu", motion_threads=1))
    eager = AnalysisEngine.from_config(
        EngineConfig(device="cpu", motion_threads=1, acceleration=AccelerationPolicy(backbone_runtimes=[]))
    )
    assert fast.acceleration is not None and fast.acceleration.backbone.path == LABEL
    assert eager.acceleration is not None and eager.acceleration.backbone.path == "fp32"
    got, want = fast.analyze(clip), eager.analyze(clip)
    assert got.num_snippets == want.num_snippets == 6
    np.testing.assert_allclose(
        [s.score for s in got.snippets], [s.score for s in want.snippets], atol=1e-4, rtol=0
    )
