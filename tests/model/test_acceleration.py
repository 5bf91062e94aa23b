"""Start-up checks of accelerated paths: broken ones are detected and bypassed, correct ones serve."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import open_clip
import pytest
import torch

from model.acceleration import (
    AccelerationPolicy,
    check_backbone,
    check_frames,
    deviation,
)
from model.backbones.base import Backbone, check_snippet_frames
from model.backbones.clip import ClipBackbone
from model.backbones.identity import BackboneIdentity
from model.backbones.runtimes import BACKBONE_RUNTIMES, BackboneRuntime, register_backbone_runtime
from model.inference import AnalysisEngine, EngineConfig
from model.motar import MoTAR
from model.shift_kernels import REFERENCE, selected_shift_kernel
from tests import accel_faults

PLUGIN = "tests.accel_faults"


def build(tmp_path: Path, head_backend: str = "torch", **policy: object) -> AnalysisEngine:
    return AnalysisEngine.from_config(
        EngineConfig(
            device="cpu",
            motion_threads=1,
            head_backend=head_backend,
            export_cache_dir=tmp_path / "exports",
            acceleration=AccelerationPolicy(**{"plugins": [PLUGIN], **policy}),
        )
    )


def scores(e: AnalysisEngine) -> np.ndarray:
    features = torch.randn(12, e.backbone.dim, generator=torch.Generator().manual_seed(1))
    return e.run_head(features).scores.numpy()


def test_cpu_engine_without_backbone_runtimes_serves_every_reference_path(tmp_path: Path) -> None:
    e = AnalysisEngine.from_config(
        EngineConfig(device="cpu", motion_threads=1, acceleration=AccelerationPolicy(backbone_runtimes=[]))
    )
    report = e.acceleration
    assert report is not None
    assert (report.shift.path, report.head.path, report.backbone.path) == (REFERENCE, "torch", "fp32")
    assert not any(p.accelerated for p in report.stages().values())
    # The Triton kernel is a candidate by default, and says why it cannot serve here.
    assert report.shift.reason_code == "unavailable" and "CUDA" in report.shift.reason


def test_wrong_and_raising_shift_kernels_are_bypassed(tmp_path: Path) -> None:
    reference = scores(build(tmp_path, shift_kernels=[]))
    e = build(tmp_path, shift_kernels=["test-swapped", "test-raising", "no-such-kernel"])
    shift = e.acceleration.shift
    assert (shift.path, shift.accelerated, shift.reason_code) == (REFERENCE, False, "mismatch")
    outcomes = {c.name: c.outcome for c in shift.checks}
    assert outcomes == {"test-swapped": "mismatch", "test-raising": "error", "no-such-kernel": "error"}
    assert "compilation failed" in shift.reason and "unknown shift kernel" in shift.reason
    assert selected_shift_kernel(e.head) == REFERENCE
    before = accel_faults.CALLS.copy()
    np.testing.assert_array_equal(scores(e), reference)  # serving, on the reference shift
    assert before == accel_faults.CALLS


def test_a_correct_shift_kernel_passes_and_serves(tmp_path: Path) -> None:
    reference = scores(build(tmp_path, shift_kernels=[]))
    e = build(tmp_path, shift_kernels=["test-swapped", "test-gather"])
    shift = e.acceleration.shift
    assert (shift.path, shift.accelerated, shift.reason_code) == ("test-gather", True, "passed")
    assert [c.outcome for c in shift.checks] == ["mismatch", "passed"]
    motar = [m for m in e.head.modules() if isinstance(m, MoTAR)]
    assert motar and all(m.shift_kernel == "test-gather" for m in motar)
    calls = accel_faults.CALLS["shift:test-gather"]
    np.testing.assert_allclose(scores(e), reference, atol=1e-6)
    assert accel_faults.CALLS["shift:test-gather"] > calls  # the kernel really serves


def test_wrong_and_raising_head_backends_fall_back_to_the_eager_head(tmp_path: Path) -> None:
    reference = scores(build(tmp_path))
    for kind, outcome, why in [
        ("test-offset", "mismatch", "beyond the tolerance"),
        ("test-raising", "error", "illegal"),
    ]:
        e = build(tmp_path, head_backend=kind)
        head = e.acceleration.head
        assert (head.path, head.accelerated, head.reason_code) == ("torch", False, outcome)
        assert why in head.reason
        assert isinstance(e.head, torch.nn.Module)
        np.testing.assert_array_equal(scores(e), reference)
        # With the eager head back, the shift stage is checked again (nothing usable on the CPU).
        assert e.acceleration.shift.reason_code == "unavailable"


def test_unusable_provider_and_unknown_backend_fall_back(tmp_path: Path) -> None:
    for kind, text in [("onnx-tensorrt", "TensorRT"), ("no-such-backend", "unknown head backend")]:
        head = build(tmp_path, head_backend=kind).acceleration.head
        assert (head.path, head.reason_code) == ("torch", "error") and text in head.reason


@pytest.mark.integration
def test_onnx_head_passes_and_serves(tmp_path: Path) -> None:
    reference = scores(build(tmp_path))
    e = build(tmp_path, head_backend="onnx")
    head = e.acceleration.head
    assert head.accelerated and head.path == "onnx (CPUExecutionProvider)" and head.reason_code == "passed"
    assert head.checks[0].max_error < 1e-4
    assert e.acceleration.shift.reason_code == "not_applicable"
    np.testing.assert_allclose(scores(e), reference, atol=1e-4)


def test_plugin_import_errors_are_reported(tmp_path: Path) -> None:
    e = build(tmp_path, plugins=[PLUGIN, "tests.no_such_plugin"])
    assert len(e.acceleration.plugin_errors) == 1 and "no_such_plugin" in e.acceleration.plugin_errors[0]


def test_deviation_rejects_other_shapes_and_non_finite_values() -> None:
    a = torch.zeros(2, 3)
    assert deviation(a + 0.5, a, "abs") == 0.5
    with pytest.raises(ValueError, match="shape"):
        deviation(torch.zeros(2, 4), a, "abs")
    with pytest.raises(ValueError, match="non-finite"):
        deviation(torch.full((2, 3), float("nan")), a, "abs")
    assert deviation(torch.ones(1, 4) * 1.01, torch.ones(1, 4), "rel_l2") == pytest.approx(0.01, rel=1e-3)


class TinyBackbone(Backbone):
    """A real (small) backbone: per-channel means of a fixed random projection of the frames, computed in
    `precision`; `flaw` adds the kind of error a broken reduced-precision path makes (overflow to inf, or a
    wrong channel order)."""

    def __init__(self, precision: str = "fp32", flaw: str | None = None, label: str = "") -> None:
        self.device = torch.device("cpu")
        self.precision = precision
        self.flaw = flaw
        self.label = label
        self.calls = 0
        self.identity = BackboneIdentity(name="tiny", architecture="proj", weights="seed0", dim=8)
        self.weight = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
        self.closed = False

    def encode_snippets(
        self, frames: np.ndarray | torch.Tensor, captions: Sequence[str] | None = None
    ) -> torch.Tensor:
        check_snippet_frames(frames)
        self.calls += 1
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[self.precision]
        x = torch.as_tensor(np.asarray(frames)).to(dtype) / 255
        if self.flaw == "bgr":
            x = x.flip(-1)
        out = (x @ self.weight.to(dtype)).mean(dim=(1, 2, 3)).float()
        return out * float("inf") if self.flaw == "overflow" else out

    @property
    def path(self) -> str:
        return self.label or self.precision

    def reference_variant(self) -> Backbone | None:
        return None if self.precision == "fp32" and not self.label else TinyBackbone("fp32")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("flaw", "outcome"), [(None, "passed"), ("bgr", "mismatch"), ("overflow", "error")])
def test_reduced_precision_backbone_is_checked_against_fp32(flaw: str | None, outcome: str) -> None:
    candidate = TinyBackbone("bf16", flaw)
    path, serving = check_backbone(candidate, sampled_frames=4, rtol=3e-2)
    assert path.checks[0].outcome == outcome
    if outcome == "passed":
        assert serving is candidate and path.path == "bf16" and path.accelerated
    else:
        assert serving is not candidate and serving.precision == "fp32" and candidate.closed
        assert path.path == "fp32" and not path.accelerated and path.reason_code == outcome


@pytest.fixture
def tiny_runtimes() -> Iterator[dict[str, list[TinyBackbone]]]:
    """Runtimes for TinyBackbone: unavailable, raising while built, wrong (BGR), and a correct one; what each
    built is recorded so a test can see which were closed."""
    built: dict[str, list[TinyBackbone]] = {"tiny-bgr": [], "tiny-good": []}

    def make(name: str, flaw: str | None) -> Callable[[Backbone], Backbone]:
        def accelerate(reference: Backbone) -> Backbone:
            assert isinstance(reference, TinyBackbone) and reference.precision == "fp32"
            backbone = TinyBackbone("fp32", flaw, label=name)
            built[name].append(backbone)
            return backbone

        return accelerate

    def raising(reference: Backbone) -> Backbone:
        raise RuntimeError("the runtime's graph does not build")

    def broken_check(reference: Backbone) -> str | None:
        raise RuntimeError("the runtime's availability check crashed")

    runtimes = [
        BackboneRuntime(
            "tiny-unavailable", lambda b: "it needs a device this machine lacks", make("x", None)
        ),
        BackboneRuntime("tiny-broken-check", broken_check, make("x", None)),
        BackboneRuntime("tiny-raising", lambda b: None, raising),
        BackboneRuntime("tiny-bgr", lambda b: None, make("tiny-bgr", "bgr")),
        BackboneRuntime("tiny-good", lambda b: None, make("tiny-good", None)),
    ]
    for runtime in runtimes:
        register_backbone_runtime(runtime)
    yield built
    for runtime in runtimes:
        BACKBONE_RUNTIMES.pop(runtime.name, None)


def test_backbone_runtimes_are_tried_in_order_and_the_first_that_passes_serves(
    tiny_runtimes: dict[str, list[TinyBackbone]],
) -> None:
    reference = TinyBackbone("fp32")
    names = [
        "no-such-runtime",
        "tiny-unavailable",
        "tiny-broken-check",
        "tiny-raising",
        "tiny-bgr",
        "tiny-good",
        "tiny-bgr",
    ]
    path, serving = check_backbone(reference, sampled_frames=4, rtol=3e-2, runtimes=names)
    assert [(c.name, c.outcome) for c in path.checks] == [
        ("no-such-runtime", "unavailable"),
        ("tiny-unavailable", "unavailable"),
        ("tiny-broken-check", "error"),
        ("tiny-raising", "error"),
        ("tiny-bgr", "mismatch"),
        ("tiny-good", "passed"),
    ]
    assert "exporters.appearance_onnx" in path.checks[0].detail
    assert "device this machine lacks" in path.checks[1].detail
    assert "availability check crashed" in path.checks[2].detail
    assert "does not build" in path.checks[3].detail
    assert (path.path, path.reference, path.accelerated) == ("tiny-good", "fp32", True)
    assert serving is tiny_runtimes["tiny-good"][0]
    # The mismatching candidate and the reference no longer serve and were released; the later runtime was
    # never built.
    assert tiny_runtimes["tiny-bgr"][0].closed and reference.closed and len(tiny_runtimes["tiny-bgr"]) == 1


def test_when_no_runtime_applies_the_reference_is_not_even_run(
    tiny_runtimes: dict[str, list[TinyBackbone]],
) -> None:
    reference = TinyBackbone("fp32")
    path, serving = check_backbone(reference, sampled_frames=4, rtol=3e-2, runtimes=["tiny-unavailable"])
    assert serving is reference and reference.calls == 0
    assert (path.path, path.reason_code) == ("fp32", "unavailable")


def test_without_a_passing_runtime_the_reference_serves(tiny_runtimes: dict[str, list[TinyBackbone]]) -> None:
    reference = TinyBackbone("fp32")
    path, serving = check_backbone(reference, sampled_frames=4, rtol=3e-2, runtimes=["tiny-bgr"])
    assert serving is reference and not reference.closed
    assert (path.path, path.accelerated, path.reason_code) == ("fp32", False, "mismatch")
    assert tiny_runtimes["tiny-bgr"][0].closed


def test_a_failing_reduced_precision_backbone_still_gets_the_runtimes(
    tiny_runtimes: dict[str, list[TinyBackbone]],
) -> None:
    candidate = TinyBackbone("bf16", "bgr")
    path, serving = check_backbone(candidate, sampled_frames=4, rtol=3e-2, runtimes=["tiny-good"])
    assert [(c.name, c.outcome) for c in path.checks] == [("bf16", "mismatch"), ("tiny-good", "passed")]
    assert serving is tiny_runtimes["tiny-good"][0] and candidate.closed


def test_bf16_clip_matches_its_fp32_copy_on_the_cpu() -> None:
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32", pretrained=None, precision="bf16")
    identity = BackboneIdentity(name="clip", architecture="ViT-S-32", weights="random", dim=384)
    clip = ClipBackbone(
        model,
        identity,
        torch.device("cpu"),
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
    )
    assert clip.precision == "bf16"
    reference = clip.reference_variant()
    assert reference is not None and reference.precision == "fp32" and reference.reference_variant() is None
    path, serving = check_backbone(clip, sampled_frames=2, rtol=3e-2)
    assert path.checks[0].outcome == "passed", path.reason
    assert serving is clip and path.checks[0].max_error > 0  # bf16 differs, within the tolerance


def test_check_frames_are_deterministic_uint8_snippets() -> None:
    frames = check_frames(2, 4)
    assert frames.shape == (2, 4, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, check_frames(2, 4))
    assert not np.array_equal(frames[0, 0], frames[0, 1])  # things move


# -- on a GPU (skipped without one; bench/gpu_check.sh runs them) ----------------------------------------------
@pytest.mark.cuda
def test_on_cuda_the_triton_shift_passes_its_check_and_serves() -> None:
    e = AnalysisEngine.from_config(EngineConfig(device="cuda", motion_threads=1))
    shift = e.acceleration.shift
    assert (shift.path, shift.reason_code) == ("triton", "passed"), shift.reason
    assert shift.checks[0].max_error <= 1e-5
    assert selected_shift_kernel(e.head) == "triton"


@pytest.mark.cuda
def test_on_cuda_the_onnx_head_passes_its_check(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA execution provider (onnxruntime-gpu is not installed)")
    config = EngineConfig(device="cuda", motion_threads=1, head_backend="onnx", export_cache_dir=tmp_path)
    head = AnalysisEngine.from_config(config).acceleration.head
    assert head.path == "onnx (CUDAExecutionProvider)" and head.reason_code == "passed", head.reason


@pytest.mark.cuda
def test_on_cuda_fp16_efficientnet_passes_its_check() -> None:
    from model.backbones.efficientnet import EfficientNetLite0Backbone

    candidate = EfficientNetLite0Backbone("cuda")
    path, serving = check_backbone(candidate, sampled_frames=4, rtol=3e-2)
    assert (path.path, path.reason_code) == ("fp16", "passed"), path.reason
    assert serving is candidate


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_on_cuda_reduced_precision_clip_passes_its_check(precision: str) -> None:
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32", pretrained=None, precision=precision, device="cuda")
    identity = BackboneIdentity(name="clip", architecture="ViT-S-32", weights="random", dim=384)
    clip = ClipBackbone(
        model,
        identity,
        torch.device("cuda"),
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
    )
    path, serving = check_backbone(clip, sampled_frames=4, rtol=3e-2)
    assert (path.path, path.reason_code) == (precision, "passed"), path.reason
    assert serving is clip


@pytest.mark.integration
def test_bf16_efficientnet_two_stream_is_bypassed_for_its_fp32_reference() -> None:
    """A real finding on the CPU: EfficientNet-Lite0 in bf16 (BatchNorm included) drifts ~5% from fp32, beyond
    the tolerance, so the two-stream backbone serves its fp32 reference, with a motion stream of its own."""
    from model.backbones.efficientnet import EfficientNetLite0Backbone
    from model.backbones.motion import MotionBackbone
    from model.backbones.two_stream import TwoStreamBackbone

    candidate = TwoStreamBackbone(EfficientNetLite0Backbone("cpu", precision="bf16"), MotionBackbone("cpu"))
    assert candidate.precision == "bf16"
    path, serving = check_backbone(candidate, sampled_frames=4, rtol=3e-2)
    assert (path.path, path.reference, path.reason_code) == ("fp32", "fp32", "mismatch"), path.reason
    assert path.checks[0].max_error > 3e-2
    assert isinstance(serving, TwoStreamBackbone) and serving.appearance.precision == "fp32"
    assert serving.identity == candidate.identity and serving.motion is not candidate.motion
    assert candidate.appearance.network is None  # the bypassed backbone was released
    features = serving.encode_snippets(check_frames(1, 4))
    assert features.shape == (1, serving.dim) and torch.isfinite(features).all()
