"""Start-up checks of accelerated inference paths against their reference paths, with fallback.

Three stages of inference can run an accelerated path that computes differently from the reference:

- `shift`: MoTAR's temporal shift by a registered kernel (`model.shift_kernels`, e.g. the fused Triton kernel)
  instead of the tensor ops;
- `head`: an exported head (TorchScript, ONNX Runtime with its CUDA or TensorRT provider, or a plugin's
  backend) instead of the eager PyTorch model;
- `backbone`: a reduced-precision (fp16/bf16) backbone, or one whose network a registered runtime computes
  (`model.backbones.runtimes`, e.g. ONNX Runtime on CPUs), instead of the eager fp32 reference
  (`Backbone.reference_variant()`).

`select_paths` runs each configured candidate and its reference on the serving device with a small fixed input
and compares the outputs. A candidate that raises, returns another shape or non-finite values, or differs by
more than the stage's tolerance is logged with the reason and bypassed: the stage is served by its reference
path. Nothing accelerated serves unless it passed. The outcome of every stage is an `AccelerationReport`
(shown by the service under `/ready` and in `/metrics`).

Tolerances: the shift is a copy of elements, so a kernel must match exactly, and the model run with it to
`SHIFT_MODEL_ATOL`; the head's scores and category probabilities/weights (all in [0, 1]) to `head_atol`
absolute; the backbone's snippet features to `backbone_rtol` relative L2 error per snippet.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from model.backbones.base import Backbone
from model.backbones.runtimes import backbone_runtime
from model.shift import adaptive_temporal_shift
from model.shift_kernels import REFERENCE, select_shift_kernel, shift_kernel

log = logging.getLogger(__name__)

Stage = Literal["shift", "head", "backbone"]
Outcome = Literal["passed", "mismatch", "error", "unavailable"]
# Why a stage is served by its path: a candidate passed, none was configured, or the candidates' worst outcome.
ReasonCode = Literal["passed", "no_candidate", "not_applicable", "unavailable", "mismatch", "error"]
Metric = Literal["abs", "rel_l2"]

# Compared head outputs: all in [0, 1], so an absolute tolerance means the same for every model.
HEAD_OUTPUTS = ("scores", "category_probs", "category_weights")
SHIFT_MODEL_ATOL = 1e-5
CHECK_SEED = 20260
CHECK_BATCH, CHECK_SNIPPETS = 2, 9  # odd T: the shift's padding at both ends and a middle snippet


class AccelerationPolicy(BaseModel):
    """Which accelerated paths to try and how close to the reference they must come."""

    shift_kernels: list[str] = Field(
        default_factory=lambda: ["triton"],
        description="shift kernels to try in order (model.shift_kernels); the first that passes serves",
    )
    head_atol: float = Field(
        default=2e-3, ge=0, description="largest absolute difference of head scores/probabilities"
    )
    backbone_rtol: float = Field(
        default=3e-2,
        ge=0,
        description="largest relative L2 error of a snippet feature (fp16/bf16 or a runtime vs eager fp32)",
    )
    backbone_runtimes: list[str] = Field(
        default_factory=lambda: ["onnxruntime"],
        description="accelerated backbone runtimes to try in order (model.backbones.runtimes); the first that "
        "passes serves",
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="modules imported first; they register shift kernels or head backends",
    )


class CandidateCheck(BaseModel):
    """One accelerated path run against its reference."""

    name: str
    outcome: Outcome
    detail: str = Field(description="what was compared and found, or the error")
    max_error: float | None = Field(default=None, description="largest difference from the reference")
    tolerance: float | None = None
    seconds: float = Field(default=0.0, description="time the check took")


class StagePath(BaseModel):
    """The path serving one stage, and why."""

    path: str = Field(
        description="what serves the stage, e.g. `triton`, `onnx (CUDAExecutionProvider)`, `fp16`"
    )
    reference: str = Field(description="the stage's reference path")
    accelerated: bool = Field(
        description="whether `path` is an accelerated path; it passed its check unless `reason_code` is `error` "
        "(a backbone whose fp32 reference could not even be built keeps serving, unchecked)"
    )
    reason_code: ReasonCode
    reason: str
    checks: list[CandidateCheck] = Field(default_factory=list)


class AccelerationReport(BaseModel):
    device: str
    shift: StagePath
    head: StagePath
    backbone: StagePath
    plugin_errors: list[str] = Field(default_factory=list)

    def stages(self) -> dict[Stage, StagePath]:
        return {"shift": self.shift, "head": self.head, "backbone": self.backbone}


# -- comparing outputs -----------------------------------------------------------------------------------------
def _tensors(output: Any, fields: Sequence[str] | None) -> list[Tensor]:
    if fields is not None:
        return [getattr(output, name) for name in fields]
    if isinstance(output, Tensor):
        return [output]
    return list(output)


def deviation(candidate: Any, reference: Any, metric: Metric, fields: Sequence[str] | None = None) -> float:
    """Largest difference between two outputs (a tensor, a sequence of tensors, or objects with `fields`).

    `abs`: max |a - b|; `rel_l2`: max over rows of ||a - b|| / ||b|| (rows = the last axis). Raises ValueError
    when the structure or a shape differs or the candidate has non-finite values where the reference has none.
    """
    got, want = _tensors(candidate, fields), _tensors(reference, fields)
    if len(got) != len(want):
        raise ValueError(f"returned {len(got)} outputs, the reference {len(want)}")
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"returned shape {list(a.shape)}, the reference {list(b.shape)}")
        a, b = a.detach().float().to(b.device), b.detach().float()
        if bool((~torch.isfinite(a) & torch.isfinite(b)).any()):
            raise ValueError("returned non-finite values where the reference is finite")
        if a.numel() == 0:
            continue
        if metric == "abs":
            value = (a - b).abs().max()
        else:
            rows_a, rows_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
            value = ((rows_a - rows_b).norm(dim=1) / rows_b.norm(dim=1).clamp_min(1e-12)).max()
        worst = max(worst, float(value))
    return worst


def _synchronize(device: torch.device) -> None:
    # Kernel errors on a GPU surface asynchronously: wait, so they count against the candidate that caused them.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_candidate(
    name: str,
    run: Callable[[], Any],
    reference: Any,
    *,
    tolerance: float,
    metric: Metric,
    device: torch.device,
    fields: Sequence[str] | None = None,
    what: str = "",
) -> CandidateCheck:
    """Run candidate `name` and compare its output with the reference output; every exception is an outcome."""
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            output = run()
        _synchronize(device)
        error = deviation(output, reference, metric, fields)
    except Exception as exc:
        return CandidateCheck(
            name=name,
            outcome="error",
            detail=f"{type(exc).__name__}: {exc}",
            tolerance=tolerance,
            seconds=time.perf_counter() - started,
        )
    kind = "absolute" if metric == "abs" else "relative L2"
    passed = error <= tolerance  # False for NaN as well
    detail = (
        f"{what} {kind} difference {error:.3g} {'within' if passed else 'beyond'} the tolerance {tolerance:g}"
    ).strip()
    return CandidateCheck(
        name=name,
        outcome="passed" if passed else "mismatch",
        detail=detail,
        max_error=error,
        tolerance=tolerance,
        seconds=time.perf_counter() - started,
    )


def _unavailable(name: str, detail: str) -> CandidateCheck:
    return CandidateCheck(name=name, outcome="unavailable", detail=detail)


_SEVERITY: dict[Outcome, int] = {"passed": 0, "unavailable": 1, "error": 2, "mismatch": 3}


def stage_path(stage: Stage, reference: str, checks: list[CandidateCheck]) -> StagePath:
    """The stage's path: the first candidate that passed, else the reference with the worst failure's reason."""
    passed = next((c for c in checks if c.outcome == "passed"), None)
    if passed is not None:
        return StagePath(
            path=passed.name,
            reference=reference,
            accelerated=True,
            reason_code="passed",
            reason=f"{passed.name} passed its start-up check on the device: {passed.detail}",
            checks=checks,
        )
    if not checks:
        return StagePath(
            path=reference,
            reference=reference,
            accelerated=False,
            reason_code="no_candidate",
            reason="no accelerated path is configured for this stage",
        )
    worst = max(checks, key=lambda c: _SEVERITY[c.outcome])
    reason = "; ".join(f"{c.name} {c.outcome}: {c.detail}" for c in checks)
    path = StagePath(
        path=reference,
        reference=reference,
        accelerated=False,
        reason_code=worst.outcome,
        reason=f"{reason}; the reference path ({reference}) serves instead",
        checks=checks,
    )
    level = logging.INFO if worst.outcome == "unavailable" else logging.WARNING
    log.log(level, "acceleration: %s stage falls back to its reference path: %s", stage, path.reason)
    return path


def not_applicable(reference: str, reason: str) -> StagePath:
    """A stage no candidate of this kind can apply to (e.g. the shift inside an exported head's graph)."""
    return StagePath(
        path=reference, reference=reference, accelerated=False, reason_code="not_applicable", reason=reason
    )


# -- the check inputs ----------------------------------------------------------------------------------------
def check_features(feature_dim: int, device: torch.device) -> Tensor:
    """Fixed snippet features [2, 9, D] with the scale of real ones (seeded, the same on every device)."""
    gen = torch.Generator().manual_seed(CHECK_SEED)
    return torch.randn(CHECK_BATCH, CHECK_SNIPPETS, feature_dim, generator=gen).to(device)


def check_shift_sizes(feature_dim: int, device: torch.device) -> Tensor:
    """Shift sizes [2, 9] covering 0, the largest D // 2 and values between."""
    gen = torch.Generator().manual_seed(CHECK_SEED + 1)
    sizes = torch.randint(0, feature_dim // 2 + 1, (CHECK_BATCH, CHECK_SNIPPETS), generator=gen)
    sizes[0, 0], sizes[0, -1], sizes[1, 0] = 0, feature_dim // 2, feature_dim // 2
    return sizes.to(device)


def check_frames(snippets: int, frames: int, size: int = 64) -> np.ndarray:
    """Snippet frames [S, F, size, size, 3] uint8: gradients, a bright blob moving across them, noise (seeded)."""
    rng = np.random.default_rng(CHECK_SEED)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    t = np.arange(snippets * frames, dtype=np.float32).reshape(snippets, frames, 1, 1)
    blob = 200.0 * np.exp(-((x - 8 - 3 * t) ** 2 + (y - 8 - 2 * t) ** 2) / 50.0)
    rgb = np.stack([x * 3 + blob, y * 2 + blob / 2, 200 - x * 2 + 0 * blob], axis=-1)  # distinct channels
    rgb += rng.normal(0.0, 10.0, rgb.shape).astype(np.float32)
    return rgb.clip(0, 255).astype(np.uint8)


# -- the stages ----------------------------------------------------------------------------------------------
def check_shift(model: nn.Module, feature_dim: int, device: torch.device, names: Sequence[str]) -> StagePath:
    """Try the shift kernels `names` in order on `model` (eager, eval); the first that passes is selected."""
    x = check_features(feature_dim, device)
    sizes = check_shift_sizes(feature_dim, device)
    select_shift_kernel(model, REFERENCE)
    with torch.inference_mode():
        expected = adaptive_temporal_shift(x, sizes)
        expected_model = model(x)
    checks: list[CandidateCheck] = []
    for name in names:
        try:
            kernel = shift_kernel(name)
        except KeyError as exc:
            checks.append(CandidateCheck(name=name, outcome="error", detail=str(exc.args[0])))
            continue
        why_not = kernel.unavailable(device)
        if why_not is not None:
            checks.append(_unavailable(name, why_not))
            continue
        check = check_candidate(
            name,
            lambda kernel=kernel: kernel.forward(x, sizes),
            expected,
            tolerance=0.0,
            metric="abs",
            device=device,
            what=f"shift of {list(x.shape)}:",
        )
        if check.outcome == "passed":
            # The whole head with the kernel in place, against the head with the tensor ops.
            select_shift_kernel(model, name)
            try:
                check = check_candidate(
                    name,
                    lambda: model(x),
                    expected_model,
                    tolerance=SHIFT_MODEL_ATOL,
                    metric="abs",
                    device=device,
                    fields=HEAD_OUTPUTS,
                    what=f"exact shift; head outputs on {list(x.shape)}:",
                )
            finally:
                select_shift_kernel(model, REFERENCE)
        checks.append(check)
        if check.outcome == "passed":
            break
    path = stage_path("shift", REFERENCE, checks)
    select_shift_kernel(model, path.path)
    return path


def check_head(
    name: str,
    load: Callable[[], Callable[[Tensor], Any]],
    reference_head: nn.Module,
    feature_dim: int,
    device: torch.device,
    atol: float,
) -> tuple[StagePath, Callable[[Tensor], Any] | None]:
    """Load head backend `name` and check it against the eager `reference_head`; (path, loaded head or None)."""
    x = check_features(feature_dim, device)
    with torch.inference_mode():
        expected = reference_head(x)
    started = time.perf_counter()
    try:
        head = load()
    except Exception as exc:
        check = CandidateCheck(
            name=name,
            outcome="error",
            detail=f"loading failed: {type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - started,
        )
        return stage_path("head", "torch", [check]), None
    label = getattr(head, "label", name)
    check = check_candidate(
        label,
        lambda: head(x),
        expected,
        tolerance=atol,
        metric="abs",
        device=device,
        fields=HEAD_OUTPUTS,
        what=f"head outputs on {list(x.shape)}:",
    )
    path = stage_path("head", "torch", [check])
    return path, head if path.accelerated else None


def check_backbone(
    backbone: Backbone, sampled_frames: int, rtol: float, runtimes: Sequence[str] = ()
) -> tuple[StagePath, Backbone]:
    """Check a backbone's accelerated paths against its fp32 reference; (path, backbone to serve).

    Candidates, in order: the backbone itself when it runs an accelerated path (fp16/bf16, a runtime), then each
    registered runtime in `runtimes` (`model.backbones.runtimes`) applied to the reference. The first whose
    snippet features come within `rtol` (relative L2 per snippet) of the reference's serves; without one the
    reference serves. Every backbone that does not serve is closed.
    """
    started = time.perf_counter()
    try:
        reference = backbone.reference_variant()
    except Exception as exc:
        check = CandidateCheck(
            name=backbone.path,
            outcome="error",
            detail=f"building the fp32 reference failed: {type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - started,
        )
        path = stage_path("backbone", "fp32", [check])
        # No reference to fall back to: the backbone keeps serving, and the report says it is unchecked.
        path.path, path.accelerated = backbone.path, True
        path.reason += " (none could be built: the unchecked backbone serves)"
        return path, backbone
    own = reference is not None
    reference = reference if reference is not None else backbone
    if not own and not runtimes:
        return (
            StagePath(
                path=backbone.path,
                reference=backbone.path,
                accelerated=False,
                reason_code="no_candidate",
                reason=f"the backbone runs its reference path ({backbone.path})",
            ),
            backbone,
        )
    frames = check_frames(CHECK_BATCH, sampled_frames)
    what = f"snippet features of {list(frames.shape)} frames:"
    checks: list[CandidateCheck] = []
    serving = reference
    expected: Tensor | None = None  # the reference's features, computed once a candidate is to be checked

    def check(candidate: Backbone) -> bool:
        nonlocal serving, expected
        if expected is None:
            with torch.inference_mode():
                expected = reference.encode_snippets(frames)
        result = check_candidate(
            candidate.path,
            lambda: candidate.encode_snippets(frames),
            expected,
            tolerance=rtol,
            metric="rel_l2",
            device=candidate.device,
            what=what,
        )
        checks.append(result)
        if result.outcome == "passed":
            serving = candidate
            return True
        candidate.close()
        return False

    if not (own and check(backbone)):
        for name in runtimes:
            try:
                runtime = backbone_runtime(name)
            except KeyError as exc:
                checks.append(_unavailable(name, str(exc.args[0])))
                continue
            built = time.perf_counter()
            try:
                why_not = runtime.unavailable(reference)
                candidate = None if why_not is not None else runtime.accelerate(reference)
            except Exception as exc:
                checks.append(
                    CandidateCheck(
                        name=name,
                        outcome="error",
                        detail=f"building it failed: {type(exc).__name__}: {exc}",
                        seconds=time.perf_counter() - built,
                    )
                )
                continue
            if candidate is None:
                checks.append(_unavailable(name, str(why_not)))
                continue
            if check(candidate):
                break
    if serving is not reference:
        reference.close()
    return stage_path("backbone", reference.path, checks), serving


def load_plugins(modules: Sequence[str]) -> list[str]:
    """Import the plugin modules (they register kernels and backends); the errors, one line each."""
    errors = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            log.error("acceleration plugin %s failed to import: %s", name, exc)
    return errors
