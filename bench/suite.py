"""The benchmark suite: the five measurements of issue 10 in one run, written to ONE results file (JSON + Markdown).

    refinevad bench --quick                  # ~3 minutes on a 2-core CPU
    refinevad bench --device cuda            # the full suite on a GPU
    refinevad bench --parts head,scaling     # some parts only

Parts (each comparison is measured side by side in the same process and run):

1. head: per-window latency (B=1, T=32) and batch throughput at [64, 32, 768] for eager PyTorch, TorchScript and
   ONNX Runtime; the tensor-op shift vs a Python-loop shift; MoTAR parameters and FLOPs vs the paper.
2. backbone: images/s of the motion descriptor and CLIP ViT-B-16 / ViT-L-14 (random weights: speed does not depend
   on them), per precision (fp16/bf16 only on a GPU) and batch size; where one video's time goes (decode,
   preprocessing, backbone, head).
3. e2e: `POST /analyze` on the real service as a multiple of real time, for a 1080p 30 fps file (real Ped2 frames
   upscaled) and the 360x240 10 fps Ped2 clip, next to the same analysis in-process.
4. live: the largest number of concurrent real-time streams with p95 capture-to-message latency under 2 s, with
   the default (motion) backbone and with CLIP ViT-B-16 sampling 4 frames per snippet.
5. scaling: head cost vs window length W, and one live scheduler cycle's cost vs the number of streams.
6. parity: every accelerated path (shift kernels, exported head backends, fp16/bf16 CLIP) against its reference
   on the device, by the same start-up check the service runs (`model.acceleration`): outcome and difference.

Figures are medians where rounds repeat. The machine (CPU model, cores, RAM, GPU), the load average before and
after, and the library versions are recorded with them: on a shared machine the load average says how much the
figures were disturbed.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

import exporters.backends  # noqa: F401  (registers the exported head backends with the engine)

log = logging.getLogger("bench.suite")

REPO_ROOT = Path(__file__).resolve().parents[1]
# In a checkout: bench/results (gitignored); installed: ./bench-results in the working directory.
DEFAULT_OUT = REPO_ROOT / "bench" / "results" if (REPO_ROOT / ".git").exists() else Path("bench-results")
Part = Literal["head", "backbone", "e2e", "live", "scaling", "parity"]
PARTS: tuple[Part, ...] = ("head", "backbone", "e2e", "live", "scaling", "parity")
SNIPPET_FRAMES = 16


class Sizes(BaseModel):
    """How much each part measures; `quick()` and `full()` are the presets, tests shrink them further."""

    head_rounds: int = 3
    head_shapes: list[str] | None = None  # labels of bench.head_latency.SHAPES; None = all
    head_iter_scale: float | None = None
    backbone_seconds: float = 3.0  # per images/s measurement
    backbone_max_calls: int = 50
    motion_snippet_batches: list[int] = Field(default_factory=lambda: [1, 4, 16])
    clip_archs: list[str] = Field(default_factory=lambda: ["ViT-B-16", "ViT-L-14"])
    clip_batches_cpu: dict[str, list[int]] = Field(
        default_factory=lambda: {"ViT-B-16": [1, 4, 16], "ViT-L-14": [1, 4]}
    )
    clip_batches_gpu: list[int] = Field(default_factory=lambda: [1, 16, 64, 256])
    # The CLIP model of the time breakdown and of the live part (the ViT-B-16; tests use a smaller one).
    clip_pipeline_arch: str = "ViT-B-16"
    clip_pipeline_sampled: int = 4
    shares_clip_snippets: int = 8  # snippets of the video the CLIP breakdown covers (CPU: slow)
    e2e_rounds: int = 3
    e2e_1080p_seconds: float = 5.0
    e2e_ped2_repeats: int = 1
    live_warmup_s: float = 6.0
    live_measure_s: float = 10.0
    live_growth: int = 2  # stream counts multiply by this until a step fails
    live_bisect_steps: int = 2
    live_budget_s: float = 300.0
    live_clip_budget_s: float = 60.0
    live_start_streams: int = 1
    live_max_streams: int = 64
    # On a GPU the search starts higher and may go further (the goal is 100 1080p30 streams per H100).
    live_start_streams_gpu: int = 8
    live_max_streams_gpu: int = 256
    scaling_windows: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128, 256])
    scaling_streams: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    scaling_rounds: int = 3
    parity_head_backends: list[str] = Field(
        default_factory=lambda: ["torchscript", "onnx", "onnx-tensorrt", "cuda-graph"]
    )
    parity_backbones: list[str] = Field(default_factory=lambda: ["clip", "efficientnet_lite0"])

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            head_rounds=1,
            head_shapes=["window D=768", "batch [64,32,768]"],
            head_iter_scale=0.5,
            backbone_seconds=1.0,
            backbone_max_calls=20,
            motion_snippet_batches=[1, 8],
            clip_batches_cpu={"ViT-B-16": [1, 4], "ViT-L-14": [1]},
            clip_batches_gpu=[1, 64],
            shares_clip_snippets=1,
            e2e_rounds=1,
            e2e_1080p_seconds=2.0,
            live_warmup_s=3.0,
            live_measure_s=6.0,
            live_start_streams=4,
            live_growth=4,
            live_bisect_steps=1,
            live_budget_s=45.0,
            live_clip_budget_s=15.0,
            scaling_windows=[8, 32, 128],
            scaling_streams=[1, 4, 16],
            scaling_rounds=1,
        )

    @classmethod
    def full(cls) -> Sizes:
        return cls()


class SuiteConfig(BaseModel):
    parts: list[Part] = Field(default_factory=lambda: list(PARTS))
    device: str = "auto"
    out_dir: Path = DEFAULT_OUT
    quick: bool = False
    sizes: Sizes = Field(default_factory=Sizes)


# -- machine and versions ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    # A copy of the tree without its history (the GPU check's) says which commit it is.
    if os.environ.get("REFINEVAD_GIT_COMMIT"):
        return os.environ["REFINEVAD_GIT_COMMIT"][:7]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(device: torch.device) -> dict[str, Any]:
    import cv2
    import onnxruntime
    import open_clip

    gpu = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "capability": f"{props.major}.{props.minor}",
        }
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": _ram_gib(),
        "gpu": gpu,
        "device": str(device),
        "cpu_only": device.type == "cpu",
        "torch_threads": torch.get_num_threads(),
        "os": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "onnxruntime_providers": onnxruntime.get_available_providers(),
            "opencv": cv2.__version__,
            "open_clip": open_clip.__version__,
            "numpy": np.__version__,
            "refinevad": _package_version("refinevad"),
            "git_commit": _git_commit(),
        },
    }


# -- shared inputs -------------------------------------------------------------------------------------------


class Inputs:
    """Videos and CLIP fixtures made once per run in a temporary directory, on first use."""

    def __init__(self, workdir: Path, sizes: Sizes) -> None:
        self.workdir = workdir
        self.sizes = sizes
        self._ped2: Path | None = None
        self._ped2_live: Path | None = None
        self._hd: Path | None = None
        self._clip: dict[tuple[str, int], tuple[Path, Path]] = {}

    @property
    def ped2_frames(self) -> Path:
        from bench.service_analyze import PED2_CLIP

        return PED2_CLIP

    def ped2_video(self) -> Path:
        """Ped2 test clip 01 as mp4: 360x240, 10 fps, 180 frames (x repeats)."""
        if self._ped2 is None:
            from bench.service_analyze import encode_video

            self._ped2 = self.workdir / "ped2-360x240-10fps.mp4"
            encode_video(self._ped2, self.ped2_frames, self.sizes.e2e_ped2_repeats)
        return self._ped2

    def ped2_live_video(self) -> Path:
        """Ped2 test clip 01 trimmed to whole snippets (176 frames): a looping replay skips no partial snippet,
        so every dropped frame the service reports is a frame dropped for lag."""
        if self._ped2_live is None:
            from bench.service_analyze import encode_video

            self._ped2_live = self.workdir / "ped2-360x240-10fps-176.mp4"
            encode_video(self._ped2_live, self.ped2_frames, 1, multiple_of=SNIPPET_FRAMES)
        return self._ped2_live

    def hd_video(self) -> Path:
        """Ped2 frames upscaled to 1920x1080, 30 fps, `e2e_1080p_seconds` long."""
        if self._hd is None:
            from bench.service_analyze import encode_upscaled

            self._hd = self.workdir / "ped2-1920x1080-30fps.mp4"
            encode_upscaled(self._hd, self.ped2_frames, self.sizes.e2e_1080p_seconds)
        return self._hd

    def clip_model(self, arch: str, sampled: int) -> tuple[Path, Path]:
        """(random-weight open_clip checkpoint file, untrained head checkpoint on its features), so the engine and
        the service can run CLIP offline exactly as with real weights (identity = the file's SHA-256)."""
        if (arch, sampled) not in self._clip:
            import open_clip

            from model.backbones.clip import file_sha256
            from model.backbones.identity import BackboneIdentity
            from model.checkpoint import save_checkpoint
            from model.config import RefineVADConfig
            from model.refinevad import RefineVAD

            torch.manual_seed(0)
            model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True)
            weights = self.workdir / f"clip-{arch}-random.pt"
            torch.save(model.state_dict(), weights)
            dim = int(model.visual.output_dim)
            del model
            identity = BackboneIdentity(
                name="clip", architecture=arch, weights=f"sha256:{file_sha256(weights)}", dim=dim
            )
            head = RefineVAD(RefineVADConfig(feature_dim=dim, sampled_frames_per_snippet=sampled))
            checkpoint = save_checkpoint(self.workdir / f"head-{arch}.pt", head, identity, {"trained": False})
            self._clip[arch, sampled] = (weights, checkpoint)
        return self._clip[arch, sampled]

    def clip_service_settings(self, arch: str, sampled: int) -> dict[str, str]:
        weights, checkpoint = self.clip_model(arch, sampled)
        return {
            "REFINEVAD_BACKBONE": "clip",
            "REFINEVAD_CLIP_ARCH": arch,
            "REFINEVAD_CLIP_CHECKPOINT": str(weights),
            "REFINEVAD_MODEL_CHECKPOINT": str(checkpoint),
        }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the parts -----------------------------------------------------------------------------------------------


def part_head(device: torch.device, sizes: Sizes, inputs: Inputs) -> dict[str, Any]:
    from bench.head_latency import run

    return run(device, rounds=sizes.head_rounds, iter_scale=sizes.head_iter_scale, shapes=sizes.head_shapes)


def part_backbone(device: torch.device, sizes: Sizes, inputs: Inputs) -> dict[str, Any]:
    from bench.extraction import clip_rates, load_frames, motion_rates, time_shares
    from model.inference import AnalysisEngine, EngineConfig

    frames = load_frames(inputs.ped2_frames, 64)
    hd_frames = load_frames(inputs.ped2_frames, 16, size=(1920, 1080))
    rates = motion_rates(frames, sizes.motion_snippet_batches, device, sizes.backbone_seconds)
    rates += motion_rates(hd_frames, sizes.motion_snippet_batches[:1], device, sizes.backbone_seconds)
    precisions = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32"]
    for arch in sizes.clip_archs:
        batches = sizes.clip_batches_gpu if device.type == "cuda" else sizes.clip_batches_cpu.get(arch, [1])
        rates += clip_rates(
            arch, precisions, batches, frames, device, sizes.backbone_seconds, sizes.backbone_max_calls
        )
        log.info("backbone %s done", arch)

    shares = []
    motion = AnalysisEngine.from_config(EngineConfig(device=str(device)))
    motion.warmup()
    for label, video in (("ped2 360x240 10fps", inputs.ped2_video()), ("1080p 30fps", inputs.hd_video())):
        shares.append({"video": label, **time_shares(motion, video)})
    weights, checkpoint = inputs.clip_model(sizes.clip_pipeline_arch, sizes.clip_pipeline_sampled)
    clip = AnalysisEngine.from_config(
        EngineConfig(
            device=str(device),
            backbone="clip",
            clip_arch=sizes.clip_pipeline_arch,
            checkpoint=checkpoint,
            clip_checkpoint=weights,
        )
    )
    clip.warmup()
    for label, video in (("ped2 360x240 10fps", inputs.ped2_video()), ("1080p 30fps", inputs.hd_video())):
        row = time_shares(clip, video, max_snippets=sizes.shares_clip_snippets)
        shares.append({"video": label, **row})
    return {"images_per_s": rates, "time_shares": shares, "precisions": precisions}


def part_e2e(device: torch.device, sizes: Sizes, inputs: Inputs) -> dict[str, Any]:
    from bench.service_analyze import run_videos

    videos = {"1080p 30fps": inputs.hd_video(), "ped2 360x240 10fps": inputs.ped2_video()}
    workdir = inputs.workdir / "e2e"
    workdir.mkdir(exist_ok=True)
    return run_videos(videos, str(device), sizes.e2e_rounds, workdir)


def part_live(device: torch.device, sizes: Sizes, inputs: Inputs) -> dict[str, Any]:
    from bench.live_streams import CapacityPlan, capacity_over_replay

    # A GPU is judged on 1080p30 cameras (the goal); a CPU on the 10 fps Ped2 camera, the only one it
    # can carry more than a few of.
    video = inputs.hd_video() if device.type == "cuda" else inputs.ped2_live_video()
    gpu = device.type == "cuda"
    plan = CapacityPlan(
        warmup_s=sizes.live_warmup_s,
        measure_s=sizes.live_measure_s,
        growth=sizes.live_growth,
        bisect_steps=sizes.live_bisect_steps,
        start_streams=sizes.live_start_streams_gpu if gpu else sizes.live_start_streams,
        max_streams=sizes.live_max_streams_gpu if gpu else sizes.live_max_streams,
        time_budget_s=sizes.live_budget_s,
    )
    results: dict[str, Any] = {}
    workdir = inputs.workdir / "live-motion"
    workdir.mkdir(exist_ok=True)
    results["motion"] = capacity_over_replay(video, str(device), workdir, plan)
    # CLIP starts from one stream: on a CPU even that is out of reach.
    clip_plan = plan.model_copy(
        update={"time_budget_s": sizes.live_clip_budget_s, "start_streams": plan.start_streams if gpu else 1}
    )
    workdir = inputs.workdir / "live-clip"
    workdir.mkdir(exist_ok=True)
    label = f"clip {sizes.clip_pipeline_arch}, {sizes.clip_pipeline_sampled} of 16 frames"
    settings = inputs.clip_service_settings(sizes.clip_pipeline_arch, sizes.clip_pipeline_sampled)
    results[label] = capacity_over_replay(video, str(device), workdir, clip_plan, settings=settings)
    return results


def _median_ms(fn: Callable[[], object], device: torch.device, rounds: int, iters: int) -> float:
    fn()
    _synchronize(device)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        _synchronize(device)
        samples.append((time.perf_counter() - start) / iters * 1e3)
    return statistics.median(samples)


def _scheduler_cycle(
    engine: Any, batch: np.ndarray, windows: Any, slots: np.ndarray, device: torch.device
) -> tuple[float, float]:
    """One live scheduler cycle's model work, as service/live/scheduler.py does it: (backbone s, head s)."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        features = engine.backbone.encode_snippets(batch)
        _synchronize(device)
        t1 = time.perf_counter()
        counts = windows.append(slots, features)
        out = engine.head(windows.gather(slots, int(counts[0])))
        out.scores.float().cpu().numpy()
        out.category_weights.float().cpu().numpy()
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def part_scaling(device: torch.device, sizes: Sizes, inputs: Inputs) -> dict[str, Any]:
    """Head cost vs W (one window, B=1), and one live scheduler cycle vs streams (batched backbone call on one
    snippet per stream, the window append, the head on every stream's W=32 window), in-process."""
    from bench.extraction import load_frames
    from model.inference import AnalysisEngine, EngineConfig
    from model.video.snippets import sample_indices
    from service.live.window import FeatureWindows

    engine = AnalysisEngine.from_config(EngineConfig(device=str(device)))
    engine.warmup()
    dim = engine.backbone.dim
    iters = 20 if device.type == "cuda" else 3
    by_window = []
    with torch.inference_mode():
        for w in sizes.scaling_windows:
            x = torch.randn(1, w, dim, device=device)
            ms = _median_ms(lambda x=x: engine.head(x), device, sizes.scaling_rounds, iters)
            row = {"window": w, "head_ms": ms, "ms_per_snippet": ms / w}
            if device.type == "cpu":
                # Side by side with one intra-op thread: on a busy CPU, OpenMP workers stall at barriers.
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    row["head_ms_1_thread"] = _median_ms(
                        lambda x=x: engine.head(x), device, sizes.scaling_rounds, iters
                    )
                finally:
                    torch.set_num_threads(threads)
            by_window.append(row)

    snippet = load_frames(inputs.ped2_frames, SNIPPET_FRAMES)[sample_indices(engine.spec)]
    window = 32
    period_s = SNIPPET_FRAMES / 10.0  # a 10 fps camera delivers a snippet every 1.6 s
    by_streams = []
    for k in sizes.scaling_streams:
        windows = FeatureWindows(window, dim, device, capacity=k)
        slots = np.array([windows.acquire() for _ in range(k)])
        batch = np.repeat(snippet[None], k, axis=0)
        for _ in range(window):  # full windows, as in steady state
            windows.append(slots, torch.randn(k, dim, device=device))
        _scheduler_cycle(engine, batch, windows, slots, device)  # warm-up
        samples = [
            _scheduler_cycle(engine, batch, windows, slots, device) for _ in range(sizes.scaling_rounds)
        ]
        backbone_ms = statistics.median(b for b, _ in samples) * 1e3
        head_ms = statistics.median(h for _, h in samples) * 1e3
        cycle_ms = statistics.median(b + h for b, h in samples) * 1e3
        by_streams.append(
            {
                "streams": k,
                "cycle_ms": cycle_ms,
                "backbone_ms": backbone_ms,
                "head_window_ms": head_ms,
                "ms_per_stream": cycle_ms / k,
                # Streams one scheduler thread could score if it did nothing else (decode not counted).
                "compute_bound_streams_10fps": period_s * 1e3 / (cycle_ms / k),
            }
        )
    return {
        "backbone": engine.identity.backbone.key(),
        "head_dim": dim,
        "vs_window": by_window,
        "vs_streams": by_streams,
        "live_window": window,
    }


def _parity_rows(stage: str, checks: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "stage": stage,
            "candidate": c.name,
            "outcome": c.outcome,
            "max_error": c.max_error,
            "tolerance": c.tolerance,
            "detail": c.detail,
        }
        for c in checks
    ]


def part_parity(device: torch.device, sizes: Sizes, inputs: Inputs) -> dict[str, Any]:
    """Each accelerated path against its reference on `device`, checked as at service start-up."""
    from model.acceleration import AccelerationPolicy, check_backbone
    from model.backbones.registry import BackboneConfig, load_backbone
    from model.inference import AnalysisEngine, EngineConfig
    from model.shift_kernels import SHIFT_KERNELS

    policy = AccelerationPolicy(shift_kernels=list(SHIFT_KERNELS))
    rows: list[dict[str, Any]] = []
    for kind in ["torch", *sizes.parity_head_backends]:
        config = EngineConfig(
            device=str(device),
            head_backend=kind,
            export_cache_dir=inputs.workdir / "exports",
            acceleration=policy,
            motion_threads=1,
        )
        report = AnalysisEngine.from_config(config).acceleration
        assert report is not None
        # The shift kernels run inside the eager head: checked once, with the eager head.
        rows += _parity_rows("shift", report.shift.checks) if kind == "torch" else []
        rows += _parity_rows("head", report.head.checks)
    precisions = ["fp16", "bf16"] if device.type == "cuda" else ["bf16"]
    for name in sizes.parity_backbones:
        label = f"clip {sizes.clip_pipeline_arch} (random weights)" if name == "clip" else name
        for precision in precisions:
            config = BackboneConfig(
                name=name, clip_arch=sizes.clip_pipeline_arch, clip_pretrained=None, precision=precision
            )
            try:
                backbone = load_backbone(config, device)
            except Exception as exc:  # a precision the device cannot build is a parity result too
                rows.append(
                    {
                        "stage": "backbone",
                        "candidate": f"{label} {precision}",
                        "outcome": "error",
                        "max_error": None,
                        "tolerance": policy.backbone_rtol,
                        "detail": f"{type(exc).__name__}: {exc}",
                    }
                )
                continue
            path, serving = check_backbone(backbone, sizes.clip_pipeline_sampled, policy.backbone_rtol)
            serving.close()
            rows += [
                {**row, "candidate": f"{label} {precision}"} for row in _parity_rows("backbone", path.checks)
            ]
    return {"device": str(device), "paths": rows}


PART_FUNCTIONS: dict[Part, Callable[[torch.device, Sizes, Inputs], dict[str, Any]]] = {
    "head": part_head,
    "backbone": part_backbone,
    "e2e": part_e2e,
    "live": part_live,
    "scaling": part_scaling,
    "parity": part_parity,
}


# -- the run -------------------------------------------------------------------------------------------------


def run_suite(config: SuiteConfig) -> tuple[dict[str, Any], Path, Path]:
    """Run the configured parts; returns (results, JSON path, Markdown path). A failing part is recorded with
    its error and the others still run."""
    from model.inference import resolve_device

    device = resolve_device(config.device)
    started = time.monotonic()
    results: dict[str, Any] = {
        "suite": "refinevad bench",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if config.quick else "full",
        "machine": machine_info(device),
        "load_average_before": list(os.getloadavg()),
        "parts": {},
        "errors": {},
    }
    with tempfile.TemporaryDirectory(prefix="refinevad-bench-") as tmp:
        inputs = Inputs(Path(tmp), config.sizes)
        for part in config.parts:
            log.info("bench part %s ...", part)
            t0 = time.monotonic()
            try:
                results["parts"][part] = PART_FUNCTIONS[part](device, config.sizes, inputs)
            except Exception as exc:
                log.exception("bench part %s failed", part)
                results["errors"][part] = f"{type(exc).__name__}: {exc}"
            results.setdefault("part_seconds", {})[part] = round(time.monotonic() - t0, 1)
            log.info("bench part %s: %.1f s", part, time.monotonic() - t0)
    results["load_average_after"] = list(os.getloadavg())
    results["wall_s"] = round(time.monotonic() - started, 1)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"bench-{results['mode']}-{device.type}-{stamp}"
    json_path = config.out_dir / f"{name}.json"
    md_path = config.out_dir / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    md_path.write_text(render_markdown(results))
    return results, json_path, md_path


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- Markdown ------------------------------------------------------------------------------------------------


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if v != v:
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(1, digits - len(str(int(abs(v)))))}f}"
    return str(value)


def _table(headers: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    v = m["versions"]
    gpu = m["gpu"]
    lines = [f"# RefineVAD benchmark ({results['mode']}, {results['created_at']})", ""]
    if m["cpu_only"]:
        lines += [
            "**CPU-only figures: no GPU was used in this run.** GPU targets (fp16/bf16 rows, 1080p30 live "
            "streams, H100 goals) need `refinevad bench --device cuda` on a GPU machine.",
            "",
        ]
    lines += _table(
        ["machine", "value"],
        [
            ["CPU", f"{m['cpu_model']} ({m['cpu_cores']} cores, {m['cpu_cores_usable']} usable)"],
            ["RAM", f"{m['ram_gib']} GiB"],
            ["GPU", f"{gpu['name']} ({gpu['memory_gib']} GiB, CUDA {gpu['cuda']})" if gpu else "none"],
            ["device", m["device"]],
            ["torch threads", m["torch_threads"]],
            [
                "load average before / after",
                f"{results['load_average_before'][0]:.2f} / "
                f"{results.get('load_average_after', [float('nan')])[0]:.2f}",
            ],
            ["python / torch / onnxruntime", f"{v['python']} / {v['torch']} / {v['onnxruntime']}"],
            ["opencv / open_clip / numpy", f"{v['opencv']} / {v['open_clip']} / {v['numpy']}"],
            ["refinevad / commit", f"{v['refinevad']} / {v['git_commit']}"],
            ["wall time", f"{results.get('wall_s', 0)} s ({results.get('part_seconds', {})})"],
        ],
    )
    parts = results["parts"]
    if "head" in parts:
        lines += _head_md(parts["head"])
    if "backbone" in parts:
        lines += _backbone_md(parts["backbone"])
    if "e2e" in parts:
        lines += _e2e_md(parts["e2e"])
    if "live" in parts:
        lines += _live_md(parts["live"])
    if "scaling" in parts:
        lines += _scaling_md(parts["scaling"])
    if "parity" in parts:
        lines += _parity_md(parts["parity"])
    if results["errors"]:
        lines += ["## Errors", ""]
        lines += [f"- **{part}**: {error}" for part, error in results["errors"].items()]
        lines.append("")
    return "\n".join(lines)


def _head_md(head: dict[str, Any]) -> list[str]:
    from bench.head_latency import PAPER_MOTAR_FLOPS, PAPER_MOTAR_MS, PAPER_MOTAR_PARAMS

    lines = ["## 1. Head", "", f"Device {head['device']}, {head['torch_threads']} torch threads.", ""]
    lines += _table(
        ["shape", "backend", "ms / call", "x eager time", "windows / s"],
        [[r["shape"], r["backend"], r["ms"], r["vs_eager"], r["windows_per_s"]] for r in head["heads"]],
    )
    lines += _table(
        ["shift at", "tensor ops ms", "Python loop ms", "loop / tensor", "fused Triton ms"],
        [
            [r["shape"], r["tensor_ms"], r["loop_ms"], r["loop_vs_tensor"], r.get("fused_ms")]
            for r in head["shift"]
        ],
    )
    motar = head["motar"]
    b1 = motar["B=1"]
    lines += _table(
        ["MoTAR (D=768)", "measured", "paper"],
        [
            ["parameters (M)", motar["params"] / 1e6, PAPER_MOTAR_PARAMS / 1e6],
            [
                "FLOPs per video [1,32,768] (M, 2 per multiply-add)",
                b1["macs_by_formula"] * 2 / 1e6,
                PAPER_MOTAR_FLOPS / 1e6,
            ],
            ["multiply-adds per video (M, by formula)", b1["macs_by_formula"] / 1e6, None],
            ["FLOPs counted by torch at [64,32,768] (M)", motar["B=64"]["flops_counted"] / 1e6, None],
            ["eager ms at [64,32,768]", motar["ms_64x32x768"], PAPER_MOTAR_MS],
            *(
                [["CUDA-graph replay ms at [64,32,768]", motar["ms_64x32x768_cuda_graph"], PAPER_MOTAR_MS]]
                if "ms_64x32x768_cuda_graph" in motar
                else []
            ),
        ],
    )
    lines += [
        "The paper's 242 M matches the multiply-adds of MoTAR at B=1 without the q/k/v projection (see "
        "`bench/head_latency.py`); its 0.856 ms is on an RTX A5000.",
        "",
    ]
    return lines


def _backbone_md(backbone: dict[str, Any]) -> list[str]:
    lines = [
        "## 2. Backbone",
        "",
        "Images/s, uint8 RGB frames in (device preprocessing included for CLIP); CLIP with random weights.",
        "",
    ]
    lines += _table(
        ["backbone", "precision", "input", "batch (images)", "images / s"],
        [
            [r["backbone"], r["precision"], r["input"], r["batch_images"], r["images_per_s"]]
            for r in backbone["images_per_s"]
        ],
    )
    lines += ["Where one video's analysis time goes (share of wall time):", ""]
    lines += _table(
        [
            "backbone",
            "video",
            "sampled / 16",
            "frames",
            "decode",
            "preprocess",
            "backbone",
            "head",
            "frames / s",
        ],
        [
            [
                r["backbone"].split(":")[0] + ":" + r["backbone"].split(":")[1],
                r["video"],
                r["sampled_frames_per_snippet"],
                r["frames"],
                f"{r['share']['decode']:.0%}",
                f"{r['share']['preprocess']:.0%}",
                f"{r['share']['backbone']:.0%}",
                f"{r['share']['head']:.0%}",
                r["frames_per_s"],
            ]
            for r in backbone["time_shares"]
        ],
    )
    return lines


def _e2e_md(e2e: dict[str, Any]) -> list[str]:
    lines = [
        "## 3. End to end: POST /analyze",
        "",
        f"Model {e2e['model']['backbone']} on {e2e['device']}, "
        f"median of {e2e['rounds']} round(s); x real time = video duration / wall time.",
        "",
    ]
    lines += _table(
        [
            "video",
            "frames",
            "duration s",
            "service s",
            "service x real time",
            "service frames/s",
            "in-process x real time",
            "service / in-process",
        ],
        [
            [
                r["video"],
                r["frames"],
                r["duration_s"],
                r["service_s"],
                r["service_x_realtime"],
                r["service_frames_per_s"],
                r["inprocess_x_realtime"],
                r["service_over_inprocess"],
            ]
            for r in e2e["videos"]
        ],
    )
    return lines


def _live_md(live: dict[str, Any]) -> list[str]:
    lines = ["## 4. Live streams", ""]
    rows = []
    for label, r in live.items():
        src = r["source"]
        best = r["latency_at_max"] or {}
        found = r["max_sustained_streams"]
        rows.append(
            [
                label,
                f"{src['width']}x{src['height']} @ {src['fps']:g} fps (file replay)",
                found
                if r["search_complete"]
                else f">= {found} (search stopped: time bound or bisection steps)",
                r["first_failing_streams"],
                best.get("latency_p50_s"),
                best.get("latency_p95_s"),
            ]
        )
    lines += _table(
        [
            "backbone",
            "source",
            "max sustained streams",
            "first failing count",
            "p50 s at max",
            "p95 s at max",
        ],
        rows,
    )
    for label, r in live.items():
        lines += [f"Steps, {label} ({r['criterion']}):", ""]
        lines += _table(
            [
                "streams",
                "p50 s",
                "p95 s",
                "max s",
                "lag-dropped frames",
                "min snippets scored / expected",
                "sustained",
            ],
            [
                [
                    s["streams"],
                    s["latency_p50_s"],
                    s["latency_p95_s"],
                    s["latency_max_s"],
                    s["dropped_frames"],
                    f"{s['min_snippets_scored']} / {s['snippets_expected']:g}",
                    s["sustained"],
                ]
                for s in r["steps"]
            ],
        )
    return lines


def _scaling_md(scaling: dict[str, Any]) -> list[str]:
    lines = ["## 5. Scaling", "", f"Default model ({scaling['backbone']}, D={scaling['head_dim']}).", ""]
    lines += _table(
        ["window W", "head ms (B=1)", "ms per snippet", "head ms, 1 torch thread"],
        [
            [r["window"], r["head_ms"], r["ms_per_snippet"], r.get("head_ms_1_thread")]
            for r in scaling["vs_window"]
        ],
    )
    lines += [f"One live scheduler cycle (one snippet per stream, W={scaling['live_window']}):", ""]
    lines += _table(
        [
            "streams",
            "cycle ms",
            "backbone ms",
            "windows + head ms",
            "ms per stream",
            "compute-bound streams at 10 fps",
        ],
        [
            [
                r["streams"],
                r["cycle_ms"],
                r["backbone_ms"],
                r["head_window_ms"],
                r["ms_per_stream"],
                r["compute_bound_streams_10fps"],
            ]
            for r in scaling["vs_streams"]
        ],
    )
    return lines


def _parity_md(parity: dict[str, Any]) -> list[str]:
    lines = [
        "## 6. Accelerated paths vs reference",
        "",
        f"On {parity['device']}, by the service's start-up check: a path serves only if it `passed`. Shift: "
        "exact copy, then the head with it; head: absolute difference of scores and category probabilities; "
        "backbone: relative L2 error of snippet features vs fp32.",
        "",
    ]
    rows = [
        [
            r["stage"],
            r["candidate"],
            r["outcome"],
            r["max_error"],
            r["tolerance"],
            r["detail"] if r["outcome"] in ("error", "unavailable") else "",
        ]
        for r in parity["paths"]
    ]
    return lines + _table(["stage", "candidate", "outcome", "difference", "tolerance", "why not"], rows)
