"""Offline analysis: a video file (or frame folder) -> snippet scores, category distributions and events.

The engine owns one backbone and one RefineVAD head on one device. `analyze` decodes the video in snippet
batches, encodes each batch with one backbone call, keeps the features on the device, and runs the head once on
the whole sequence (in chunks of `max_head_snippets` for very long videos). Each snippet's category
distribution comes from the head run on the window of `category_window` snippets centred on it (a live stream
uses the window ending at its newest snippet); the video-level distribution comes from the whole-video run.

Nothing the container announces is trusted: snippets are placed by their frames' own timestamps, the frame limit
applies to decoded frames, progress follows the bytes read, and the result's `decode` object says what decoding
really produced (frames announced and decoded, truncation, damaged or lost frames, size changes, timestamp jumps).
Degraded snippets (a damaged or lost frame) are flagged and never open an event on their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, Field

from model.acceleration import (
    AccelerationPolicy,
    AccelerationReport,
    check_backbone,
    check_head,
    check_shift,
    load_plugins,
    not_applicable,
    stage_path,
)
from model.backbones.base import Backbone
from model.backbones.identity import BackboneIdentity
from model.backbones.registry import BackboneName
from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.config import RefineVADConfig
from model.ensemble import HeadModel, RefineVADEnsemble
from model.events import Event, EventPolicy, detect_events
from model.refinevad import RefineVAD
from model.scene import SceneDescriptor, SceneModel, SceneStatus, fuse
from model.scene_familiarity import SceneCheck, SceneFamiliarity
from model.scoring import VideoScores, score_features
from model.shift_kernels import REFERENCE
from model.video.decode_report import DecodeReport
from model.video.pyav_source import count_video_packets
from model.video.snippets import SnippetBatch, SnippetSpec, iter_snippet_batches
from model.video.source import DEFAULT_FOLDER_FPS, VideoDecodeError, VideoSource, open_source

log = logging.getLogger(__name__)

# Decoded frames per batch are capped at this many bytes (1080p: one snippet is already ~100 MB), so the
# prefetched batches in flight stay small whatever the resolution.
MAX_BATCH_BYTES = 64 * 2**20
# Batches decoded ahead of the backbone.
PREFETCH_DEPTH = 2
# What `encode` keeps of each snippet batch once its frames are encoded.
_PLACEMENT = ("start_frames", "end_frames", "start_times", "end_times", "degraded")

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "default.pt"
# Models shipped in the package, selectable by name wherever a checkpoint path is taken (see the model card).
SHIPPED_CHECKPOINTS = {
    "default": DEFAULT_CHECKPOINT,
    "ped2_motion": WEIGHTS_DIR / "ped2_motion.pt",
    # Ped2 + surv-fight with the motion-grid-v2 descriptor, categories incl. Fighting (model card, "v3").
    "v3": WEIGHTS_DIR / "v3.pt",
}


def resolve_checkpoint(path: str | Path | None) -> Path | None:
    """A checkpoint path, or the name of a shipped model (`default`, `ped2_motion`, `v3`); None = the default model
    (None too when the package ships none). An existing file wins over a shipped name."""
    if path is None:
        return DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None
    candidate = Path(path)
    if not candidate.exists() and str(path) in SHIPPED_CHECKPOINTS:
        return SHIPPED_CHECKPOINTS[str(path)]
    return candidate


def scene_warning(check: SceneCheck, withheld: bool) -> str | None:
    """The warning for a whole video's scene check, or None when every snippet was familiar."""
    if check.familiar and not check.unfamiliar_snippets:
        return None
    if check.familiar:
        what = (
            f"{check.unfamiliar_snippets} of {check.snippets} snippets show a view unlike the footage the model "
            f"was trained on (threshold {check.threshold:.3g}); their scores are no evidence of anomalies"
        )
    else:
        what = (
            f"this footage is unlike the footage the model was trained on (scene distance {check.distance:.3g} > "
            f"threshold {check.threshold:.3g}); its scores are no evidence of anomalies"
        )
    return (
        f"UNFAMILIAR SCENE: {what}"
        + ("; events withheld" if withheld else "")
        + ". Train a model on this camera's footage."
    )


UNTRAINED_WARNING = (
    "UNTRAINED MODEL: the head has random weights (no trained checkpoint was found or configured); "
    "scores and categories are meaningless. Set REFINEVAD_MODEL_CHECKPOINT to a trained checkpoint."
)


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was requested but no CUDA GPU is available (set device to auto or cpu)"
        )
    return resolved


class EngineConfig(BaseModel):
    checkpoint: Path | None = Field(
        None,
        description="trained head: a file, or a shipped model's name (default, ped2_motion); "
        "None = the default model shipped in the package",
    )
    backbone: BackboneName | None = Field(None, description="None = the checkpoint's backbone")
    clip_arch: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    clip_checkpoint: Path | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    sampled_frames_per_snippet: int | None = Field(None, ge=1, description="None = the checkpoint's value")
    snippets_per_batch: int = Field(8, ge=1)
    max_head_snippets: int = Field(4096, ge=32)
    category_window: int = Field(32, ge=1)
    category_stride: int = Field(4, ge=1)
    events: EventPolicy = Field(default_factory=EventPolicy)
    scene_check: Literal["withhold_events", "report", "off"] = Field(
        "withhold_events",
        description="scene familiarity (model.scene_familiarity, when the checkpoint is calibrated): "
        "withhold_events = footage unlike the training footage raises no events (its scores are reported, "
        "flagged); report = flag only; off = no check",
    )
    motion_threads: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1),
        ge=1,
        description="threads of the motion descriptor (its output is the same for any count)",
    )
    head_backend: str = Field(
        "torch",
        description="how the head runs: eager PyTorch (the reference), torchscript, onnx (ONNX Runtime, CUDA "
        "when present), onnx-tensorrt, cuda-graph (CUDA-graph replays of the eager head), or a plugin's backend; "
        "anything but torch serves only if it passes "
        "its start-up check against the eager head",
    )
    acceleration: AccelerationPolicy = Field(
        default_factory=AccelerationPolicy, description="accelerated paths to check at start-up"
    )
    export_cache_dir: Path | None = Field(
        None, description="where TorchScript/ONNX exports of the head are cached"
    )
    scene_check_min_snippets: int = Field(
        8,
        ge=1,
        description="snippets the scene-familiarity check needs before the head's scores count (events)",
    )
    max_frames: int | None = Field(None, ge=1, description="refuse videos with more decoded frames")
    max_pixels: int | None = Field(
        None, ge=1, description="refuse videos with larger frames (width x height)"
    )
    folder_fps: float = Field(
        DEFAULT_FOLDER_FPS, gt=0, le=1000, description="frame rate of frame folders (images carry no timing)"
    )


class ModelInfo(BaseModel):
    checkpoint: str
    sha256: str | None
    trained: bool
    category_names: list[str]
    backbone: BackboneIdentity
    config: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    scene_threshold: float | None = Field(
        None, description="scene-familiarity threshold of the checkpoint; None = not calibrated or check off"
    )
    ensemble_members: int = Field(
        1, description="heads averaged (a seed ensemble, model.ensemble); 1 = a single head"
    )


class VideoInfo(BaseModel):
    fps: float = Field(
        description="frames per second: nominal before decoding, decoded frames / duration after"
    )
    frame_count: int | None = Field(
        description="frames counted in the data (packets before decoding, then frames)"
    )
    width: int = Field(
        description="picture size of the first frame as displayed (its display rotation applied, "
        "decode.display_rotation); later sizes are letterboxed into it"
    )
    height: int
    duration_s: float | None = Field(description="media time from the first frame to the end of the last")


class SnippetScore(BaseModel):
    index: int
    start_s: float = Field(description="media time of the snippet's first frame (its own timestamp)")
    end_s: float = Field(description="media time of the snippet's last frame")
    # Optional only so that results stored before frame indices were reported still read back.
    start_frame: int | None = Field(
        None, description="index (from 0) of the snippet's first decoded frame, the frame at start_s"
    )
    end_frame: int | None = Field(
        None, description="index of the snippet's last decoded frame (inclusive), the frame at end_s"
    )
    score: float = Field(
        description="the fused score events use (model.scene.fusion): the head's alone while the camera has no "
        "calibrated scene model"
    )
    # Optional only so that results stored before scene models existed still read back.
    head_score: float | None = Field(None, description="RefineVAD's anomaly score of the snippet")
    scene_score: float | None = Field(
        None,
        description="the camera's scene novelty (model.scene; 0.5 = as rare as the camera's 1 % most unusual "
        "normal footage); null without a calibrated scene model (no camera given, or still learning)",
    )
    categories: dict[str, float]
    degraded: bool = Field(default=False, description="a frame of this snippet was damaged or lost")


class AnalysisResult(BaseModel):
    model: ModelInfo
    video: VideoInfo
    snippets: list[SnippetScore]
    video_categories: dict[str, float] = Field(description="whole-video soft category distribution")
    category_probs: dict[str, float] = Field(description="whole-video per-category anomaly probability")
    frame_scores: list[float] | None = None
    events: list[Event]
    decode: DecodeReport = Field(description="what decoding really produced, against what the file announced")
    untrained_warning: str | None = None
    scene: SceneCheck | None = Field(
        None, description="is the footage like the training footage (None: the model is not calibrated)"
    )
    scene_warning: str | None = Field(None, description="set when the scene is unfamiliar")
    camera: str | None = Field(None, description="the camera whose scene model scored the video (`?camera=`)")
    camera_scene: SceneStatus | None = Field(
        None,
        description="that camera's scene model as it scored the video (state `learning`: no scene_score)",
    )
    timings: dict[str, float]
    frames: int
    num_snippets: int


class AnalysisCancelled(RuntimeError):
    pass


class EncodedVideo(NamedTuple):
    """A decoded and encoded video: features [T, D] on the device and per-snippet placement [T]."""

    features: torch.Tensor
    start_frames: np.ndarray
    end_frames: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    degraded: np.ndarray
    info: VideoInfo
    frames: int
    decode: DecodeReport
    timings: dict[str, float]
    regions: np.ndarray | None = None  # [T, R, d] scene region descriptors (model.scene), when asked for


class HeadOutputs(NamedTuple):
    scores: torch.Tensor
    logits: torch.Tensor
    category_probs: torch.Tensor
    category_weights: torch.Tensor


class ExportedHead:
    """A TorchScript or ONNX Runtime head behind the same call as RefineVAD: x [B, T, D] -> outputs."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.label: str = getattr(backend, "label", type(backend).__name__)

    def __call__(self, x: torch.Tensor) -> HeadOutputs:
        out = self.backend(x.float())
        return HeadOutputs(out["scores"], out["logits"], out["category_probs"], out["category_weights"])

    def eval(self) -> ExportedHead:
        return self


def _load_head(config: EngineConfig, device: torch.device) -> LoadedCheckpoint | None:
    path = resolve_checkpoint(config.checkpoint)
    if path is None:
        return None
    return load_checkpoint(path, map_location=device)


def _backbone_config(config: EngineConfig, loaded: LoadedCheckpoint | None):
    """The configured backbone; unset = the checkpoint's, rebuilt with the options its identity records
    (pooling, input size, frame sampling), so the head sees features made the way it was trained on."""
    from model.backbones.registry import BackboneConfig, config_for_identity

    fields = {
        "clip_pretrained": config.clip_pretrained,
        "clip_checkpoint": config.clip_checkpoint,
        "cache_dir": config.cache_dir,
        "motion_threads": config.motion_threads,
    }
    if config.backbone is None and loaded is not None:
        return config_for_identity(loaded.backbone, **fields)
    return BackboneConfig(name=config.backbone or "motion", clip_arch=config.clip_arch, **fields)


# Set by exporters.backends when it is imported (model sits below exporters and does not import it).
_head_backend_loader: Callable[..., Any] | None = None


def set_head_backend_loader(loader: Callable[..., Any]) -> None:
    """`loader(name, checkpoint_path, device, cache_dir=...)` -> a head backend returning the head's outputs."""
    global _head_backend_loader
    _head_backend_loader = loader


class _Prefetch:
    """Runs an iterator on a background thread up to `depth` items ahead, so decoding the next batch overlaps
    encoding the current one (OpenCV decoding and the backbones release the GIL). Errors of the iterator are
    raised at the consumer; `close()` stops the thread and waits for it, so the caller may then close the source
    the iterator reads."""

    def __init__(self, iterator: Iterator[SnippetBatch], depth: int) -> None:
        self._iterator = iterator
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="decode-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._iterator:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:
            self._put(("error", exc))

    def _put(self, entry: tuple[str, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> SnippetBatch | None:
        """The next item, None at the end."""
        kind, value = self._queue.get()
        if kind == "error":
            raise value  # type: ignore[misc]
        if kind == "end":
            self._queue.put(("end", None))  # later calls see the end too
            return None
        return value  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.1)
        self._thread.join()


class AnalysisEngine:
    def __init__(
        self,
        backbone: Backbone,
        head: HeadModel | ExportedHead,
        info: ModelInfo,
        spec: SnippetSpec,
        config: EngineConfig,
    ) -> None:
        self.backbone = backbone
        self.head = head.eval()
        self.identity = info
        self.spec = spec
        self.config = config
        self.device = backbone.device
        self.category_names = list(info.category_names)
        # Which path serves each stage and why (set by from_config's start-up checks).
        self.acceleration: AccelerationReport | None = None
        self.scene: SceneFamiliarity | None = None
        self.scene_descriptor = SceneDescriptor()
        self._describers: ThreadPoolExecutor | None = None
        self._describers_lock = threading.Lock()

    def describe_regions_async(self, frames: np.ndarray) -> Future[np.ndarray]:
        """Region descriptors `[S, R, d]` of uint8 snippets `[S, F, H, W, 3]` for a scene model
        (`SceneDescriptor.describe`), computed on one of the engine's two scene threads so that they are made while
        the backbone encodes the same batch: OpenCV's flow and NumPy release the GIL, and the backbone may be on a
        GPU. The future raises what `describe` raises."""
        with self._describers_lock:
            if self._describers is None:
                self._describers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scene-describe")
        return self._describers.submit(self.scene_descriptor.describe, frames)

    @property
    def withholds_unfamiliar(self) -> bool:
        return self.scene is not None and self.config.scene_check == "withhold_events"

    @classmethod
    def from_config(cls, config: EngineConfig) -> AnalysisEngine:
        """Build the engine; accelerated paths (shift kernel, exported head, reduced-precision or runtime backbone) serve
        only after matching their reference paths on the device (see `model.acceleration`)."""
        from model.backbones.registry import load_backbone

        device = resolve_device(config.device)
        plugin_errors = load_plugins(config.acceleration.plugins)
        loaded = _load_head(config, device)
        backbone = load_backbone(_backbone_config(config, loaded), device)
        if loaded is None:
            log.warning(UNTRAINED_WARNING)
            if config.head_backend != "torch":
                raise ValueError(
                    f"head_backend {config.head_backend!r} needs a checkpoint file to export; none is configured"
                )
            torch.manual_seed(0)
            head_config = RefineVADConfig(feature_dim=backbone.dim)
            head = RefineVAD(head_config).to(device)
            info = ModelInfo(
                checkpoint="untrained",
                sha256=None,
                trained=False,
                category_names=head_config.category_names,
                backbone=backbone.identity,
                config=head_config.model_dump(mode="json"),
            )
        else:
            problem = loaded.backbone.mismatch(backbone.identity)
            if problem:
                raise ValueError(
                    f"{problem}. Configure the backbone the checkpoint was trained with "
                    f"(REFINEVAD_BACKBONE / clip settings) or a checkpoint trained on this backbone."
                )
            head_config = loaded.config
            head = loaded.model
            info = ModelInfo(
                checkpoint=str(loaded.path.name if loaded.path else "checkpoint"),
                sha256=loaded.sha256,
                trained=loaded.trained,
                category_names=head_config.category_names,
                backbone=loaded.backbone,
                config=head_config.model_dump(mode="json"),
                metrics=dict(loaded.metadata.get("metrics", {})),
                ensemble_members=len(head.members) if isinstance(head, RefineVADEnsemble) else 1,
            )
            if not loaded.trained:
                log.warning(UNTRAINED_WARNING)
        spec = SnippetSpec(
            frames_per_snippet=head_config.frames_per_snippet,
            sampled_frames_per_snippet=config.sampled_frames_per_snippet
            or head_config.sampled_frames_per_snippet,
        )
        engine = cls(backbone, head, info, spec, config)
        if loaded is not None and config.scene_check != "off":
            engine.scene = SceneFamiliarity.from_metadata(loaded.metadata, device)
            if engine.scene is not None and engine.scene.dim != backbone.dim:
                raise ValueError(
                    f"the checkpoint's scene calibration is {engine.scene.dim}-dim, the backbone {backbone.dim}"
                )
            if engine.scene is None:
                log.warning(
                    "the checkpoint has no scene calibration: footage of other cameras is not flagged"
                )
            else:
                engine.identity.scene_threshold = engine.scene.threshold
        engine.select_accelerated_paths(loaded.path if loaded else None, plugin_errors)
        return engine

    def select_accelerated_paths(
        self, checkpoint: Path | None = None, plugin_errors: Sequence[str] = ()
    ) -> None:
        """Check each configured accelerated path against its reference on the device and keep those that pass
        (`self.acceleration` says which serve and why). `checkpoint`: the file an exported head is made from.

        Call it once, on an engine whose head is the eager model (as `from_config` does)."""
        config, policy = self.config, self.config.acceleration
        dim = self.backbone.dim
        backbone_path, self.backbone = check_backbone(
            self.backbone,
            self.spec.sampled_frames_per_snippet,
            policy.backbone_rtol,
            policy.backbone_runtimes,
        )
        reference_head = self.head
        if not isinstance(reference_head, torch.nn.Module):
            raise ValueError("select_accelerated_paths needs the eager head as the engine's head")
        if config.head_backend == "torch":
            head_path = stage_path("head", "torch", [])
        else:

            def load() -> ExportedHead:
                if _head_backend_loader is None:
                    raise RuntimeError(
                        f"head backend {config.head_backend!r} needs the exporters package: import "
                        f"exporters.backends before building the engine"
                    )
                assert checkpoint is not None
                backend = _head_backend_loader(
                    config.head_backend, checkpoint, self.device, cache_dir=config.export_cache_dir
                )
                return ExportedHead(backend)

            head_path, exported = check_head(
                config.head_backend, load, reference_head, dim, self.device, policy.head_atol
            )
            if exported is not None:
                self.head = exported
        if head_path.accelerated:
            # The exported graph carries the tensor-op shift; no kernel of ours runs inside it.
            shift_path = not_applicable(
                REFERENCE, f"the {head_path.path} head runs its exported graph's tensor-op shift"
            )
        else:
            shift_path = check_shift(reference_head, dim, self.device, policy.shift_kernels)
        self.acceleration = AccelerationReport(
            device=str(self.device),
            shift=shift_path,
            head=head_path,
            backbone=backbone_path,
            plugin_errors=list(plugin_errors),
        )
        for stage, path in self.acceleration.stages().items():
            log.info("acceleration: %s served by %s (%s)", stage, path.path, path.reason)

    @property
    def untrained_warning(self) -> str | None:
        return None if self.identity.trained else UNTRAINED_WARNING

    # -- pieces ----------------------------------------------------------------------------------------------
    def warmup(self) -> None:
        """One tiny pass through backbone and head, so the first request does not pay for lazy init."""
        frames = np.zeros((1, self.spec.sampled_frames_per_snippet, 64, 64, 3), dtype=np.uint8)
        with torch.inference_mode():
            features = self.backbone.encode_snippets(frames)
            self.head(features.unsqueeze(0))

    def probe(self, path: str | Path) -> VideoInfo:
        """Check a video before analysing it: it decodes (first frame), its picture fits `max_pixels`, and the
        frames in its data (video packets counted without decoding, not the container's claim) fit
        `max_frames`. `duration_s` is that count over the nominal rate. Raises `VideoDecodeError` (or its
        `NotVideoError` subclass for bytes that are not video)."""
        with self._open(path) as source:
            fps, width, height = source.fps, source.width, source.height
            frames = source.frame_count
            if Path(path).is_file():
                frames = count_video_packets(path, self.config.max_frames)
                if frames is None:
                    raise VideoDecodeError(
                        f"video has more than the limit of {self.config.max_frames} frames"
                    )
        return VideoInfo(
            fps=fps,
            frame_count=frames,
            width=width,
            height=height,
            duration_s=frames / fps if frames else None,
        )

    def _open(self, path: str | Path) -> VideoSource:
        source = open_source(path, folder_fps=self.config.folder_fps, max_pixels=self.config.max_pixels)
        c = self.config
        if c.max_pixels and source.width * source.height > c.max_pixels:
            source.close()
            raise VideoDecodeError(
                f"video frames are {source.width}x{source.height}, larger than the limit of "
                f"{c.max_pixels} pixels per frame"
            )
        return source

    def run_head(self, features: torch.Tensor) -> VideoScores:
        """features [T, D] -> snippet scores [T] and the video's category weights and probabilities [C]."""
        with torch.inference_mode():
            return score_features(self.head, features, self.config.max_head_snippets)

    @torch.inference_mode()
    def local_categories(self, features: torch.Tensor) -> torch.Tensor:
        """Category distribution [T, C] of each snippet: the head on a window of W snippets around it."""
        t = features.shape[0]
        w = min(self.config.category_window, t)
        starts = np.arange(0, t - w + 1, self.config.category_stride)
        if starts[-1] != t - w:
            starts = np.append(starts, t - w)
        windows = features.unfold(0, w, 1)[torch.as_tensor(starts, device=features.device)]  # [N, D, W]
        weights = []
        for batch in windows.split(256):
            weights.append(self.head(batch.transpose(1, 2)).category_weights)
        per_window = torch.cat(weights)  # [N, C]
        # Each snippet takes the window whose centre is nearest to it.
        centres = torch.as_tensor(starts + (w - 1) / 2.0, device=features.device)
        idx = (torch.arange(t, device=features.device)[:, None] - centres[None, :]).abs().argmin(dim=1)
        return per_window[idx]

    def _snippets_per_batch(self, width: int, height: int) -> int:
        """The configured snippets per batch, fewer for large frames (decoded batch <= MAX_BATCH_BYTES)."""
        snippet_bytes = self.spec.frames_per_snippet * width * height * 3
        return max(1, min(self.config.snippets_per_batch, MAX_BATCH_BYTES // snippet_bytes))

    def encode(
        self,
        path: str | Path,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        describe_scene: bool = False,
    ) -> EncodedVideo:
        """Decode and encode a video (and describe its snippets' regions for a scene model, with
        `describe_scene`). Raises `VideoDecodeError` when it cannot be decoded or has more decoded
        frames than `max_frames`, `AnalysisCancelled` when `should_stop` says so."""
        timings = {"decode_s": 0.0, "backbone_s": 0.0}
        features: list[torch.Tensor] = []
        regions: list[np.ndarray] = []
        if describe_scene:
            timings["scene_s"] = 0.0
        placement: dict[str, list[np.ndarray]] = {name: [] for name in _PLACEMENT}
        with self._open(path) as source:
            batches = _Prefetch(
                iter_snippet_batches(
                    source, self.spec, self._snippets_per_batch(source.width, source.height)
                ),
                PREFETCH_DEPTH,
            )
            frames_done = 0
            try:
                while True:
                    # Decoding runs ahead on the prefetch thread: this is the time spent waiting for it.
                    t0 = time.perf_counter()
                    batch = batches.next()
                    timings["decode_s"] += time.perf_counter() - t0
                    if batch is None:
                        break
                    if should_stop is not None and should_stop():
                        raise AnalysisCancelled("analysis cancelled")
                    frames_done = int(batch.end_frames[-1])
                    if self.config.max_frames and frames_done > self.config.max_frames:
                        raise VideoDecodeError(
                            f"video has more than the limit of {self.config.max_frames} frames"
                        )
                    described = self.describe_regions_async(batch.frames) if describe_scene else None
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        features.append(self.backbone.encode_snippets(batch.frames))
                    timings["backbone_s"] += time.perf_counter() - t0
                    if described is not None:
                        # What the scene descriptor added: the wait for it once the backbone was done.
                        t0 = time.perf_counter()
                        regions.append(described.result())
                        timings["scene_s"] += time.perf_counter() - t0
                    for name, parts in placement.items():
                        parts.append(getattr(batch, name))
                    fraction = source.progress
                    if progress is not None and fraction is not None:
                        progress(min(fraction, 0.99))
            finally:
                batches.close()
            if not features:
                raise VideoDecodeError(f"{path}: no frames could be decoded")
            report = source.report.model_copy(deep=True)
            width, height, nominal_fps = source.width, source.height, source.fps

        def joined(name: str) -> np.ndarray:
            return np.concatenate(placement[name])

        start_s, end_s = joined("start_times"), joined("end_times")
        # The last frame lasts as long as the average frame before it (one nominal interval for a single frame).
        step = (end_s[-1] - start_s[0]) / (frames_done - 1) if frames_done > 1 else 1.0 / nominal_fps
        duration = float(end_s[-1] - start_s[0] + step) if step > 0 else None
        info = VideoInfo(
            fps=round(frames_done / duration, 6) if duration else nominal_fps,
            frame_count=frames_done,
            width=width,
            height=height,
            duration_s=round(duration, 6) if duration else None,
        )
        return EncodedVideo(
            torch.cat(features),
            joined("start_frames"),
            joined("end_frames"),
            start_s,
            end_s,
            joined("degraded"),
            info,
            frames_done,
            report,
            timings,
            np.concatenate(regions) if describe_scene else None,
        )

    def head_trusted(self, familiar: np.ndarray) -> np.ndarray:
        """`[T]` familiarity of each snippet's trailing window -> `[T]` whether the head's score may count.

        A check over the first snippet or two of a view cannot judge it: the first snippets take the verdict
        of the window over the first `scene_check_min_snippets` snippets (all of them in a shorter video). Live
        cannot look ahead, so there the head's scores count only from that snippet on (no event before it)."""
        trusted = np.asarray(familiar, bool).copy()
        k = min(self.config.scene_check_min_snippets, len(trusted)) - 1
        if k > 0:
            trusted[:k] = trusted[k]
        return trusted

    def analyze(
        self,
        path: str | Path,
        progress: Callable[[float], None] | None = None,
        frame_scores: bool = False,
        should_stop: Callable[[], bool] | None = None,
        camera: SceneModel | None = None,
        camera_id: str | None = None,
    ) -> AnalysisResult:
        """Score a video; with `camera` (a scene model) its snippets also get that camera's `scene_score`, fused
        into `score` (model.scene.fusion)."""
        encoded = self.encode(path, progress, should_stop, describe_scene=camera is not None)
        features, info, frames, timings = encoded.features, encoded.info, encoded.frames, encoded.timings
        t0 = time.perf_counter()
        video = self.run_head(features)
        scores, video_weights, video_probs = video.scores, video.category_weights, video.category_probs
        local = self.local_categories(features)
        scores_np = scores.float().cpu().numpy()
        local_np = local.float().cpu().numpy()
        timings["head_s"] = time.perf_counter() - t0
        names = self.category_names
        start_s, end_s, degraded = encoded.start_s, encoded.end_s, encoded.degraded
        scene, warning, no_evidence = None, None, degraded
        trusted = None
        if self.scene is not None:
            scene, familiar = self.scene.check_video(features)
            trusted = self.head_trusted(familiar)
            warning = scene_warning(scene, self.withholds_unfamiliar)
            if warning:
                log.warning("%s: %s", path, warning)
        scene_scores = None
        if camera is not None and encoded.regions is not None:
            scene_scores = camera.score(encoded.regions)
        head_np = scores_np
        if scene_scores is None:
            # As live: a snippet the head cannot judge (view unfamiliar, or too few snippets to tell) is no
            # evidence, like a damaged one.
            if trusted is not None and self.withholds_unfamiliar:
                no_evidence = degraded | ~trusted
        else:
            scores_np = fuse(head_np, scene_scores, trusted if self.withholds_unfamiliar else None)
        snippets = [
            SnippetScore(
                index=i,
                start_s=float(start_s[i]),
                end_s=float(end_s[i]),
                start_frame=int(encoded.start_frames[i]),
                end_frame=int(encoded.end_frames[i]) - 1,  # end_frames is one past the last
                score=float(scores_np[i]),
                head_score=float(head_np[i]),
                scene_score=None if scene_scores is None else float(scene_scores[i]),
                categories=dict(zip(names, local_np[i].tolist(), strict=True)),
                degraded=bool(degraded[i]),
            )
            for i in range(len(scores_np))
        ]
        per_frame = None
        if frame_scores:
            per_frame = np.repeat(scores_np, self.spec.frames_per_snippet)[:frames].tolist()
        events = detect_events(scores_np, start_s, end_s, local_np, names, self.config.events, no_evidence)
        if progress is not None:
            progress(1.0)
        return AnalysisResult(
            model=self.identity,
            video=info,
            snippets=snippets,
            video_categories=dict(zip(names, video_weights.float().cpu().tolist(), strict=True)),
            category_probs=dict(zip(names, video_probs.float().cpu().tolist(), strict=True)),
            frame_scores=per_frame,
            events=events,
            decode=encoded.decode,
            untrained_warning=self.untrained_warning,
            scene=scene,
            scene_warning=warning,
            camera=camera_id,
            camera_scene=None if camera is None else camera.status(),
            timings=timings,
            frames=frames,
            num_snippets=len(snippets),
        )
