"""Holds the analysis engine: loads and warms it in a background thread at start-up, so `/health` answers at once
and `/ready` turns true only once a forward pass has run. Everything that needs the model asks this object."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

import exporters.backends  # noqa: F401  (registers the exported head backends with the engine)
from model.acceleration import AccelerationPolicy, AccelerationReport
from model.events import EventPolicy
from model.inference import AnalysisEngine, EngineConfig, ModelInfo
from service.errors import ApiError
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

ModelState = Literal["loading", "ready", "failed"]


def engine_config(settings: ServiceSettings) -> EngineConfig:
    # Unset CLIP options keep the engine's own defaults.
    optional = {
        key: value
        for key in ("clip_arch", "clip_pretrained", "clip_checkpoint", "cache_dir", "motion_threads")
        if (value := getattr(settings, key)) is not None
    }
    threshold = settings.event_threshold
    return EngineConfig(
        checkpoint=settings.model_checkpoint,
        backbone=settings.backbone,
        device=settings.device,
        head_backend=settings.head_backend,
        acceleration=AccelerationPolicy(
            shift_kernels=settings.accel_shift_kernels,
            head_atol=settings.accel_head_atol,
            backbone_rtol=settings.accel_backbone_rtol,
            backbone_runtimes=settings.accel_backbone_runtimes,
            plugins=settings.accel_plugins,
        ),
        export_cache_dir=settings.cache_dir / "exports" if settings.cache_dir else None,
        # Hysteresis: an event closes a little below the score that opened it.
        events=EventPolicy(enter_threshold=threshold, exit_threshold=max(0.0, threshold - 0.1)),
        scene_check=settings.scene_check,
        scene_check_min_snippets=settings.scene_check_min_snippets,
        max_frames=settings.max_video_frames,
        max_pixels=settings.max_video_pixels,
        **optional,
    )


class ModelService:
    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state: ModelState = "loading"
        self.error: str | None = None
        self._engine: AnalysisEngine | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            engine = AnalysisEngine.from_config(engine_config(self.settings))
            engine.warmup()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            logger.exception("MODEL FAILED TO LOAD: the service cannot analyse anything: %s", self.error)
        else:
            self._engine = engine
            self.state = "ready"
            if engine.acceleration is not None:
                self.metrics.set_acceleration(engine.acceleration)
            self.metrics.model_ready.set(1)
            identity = engine.identity
            members = identity.ensemble_members
            logger.info(
                "model ready in %.1fs: checkpoint %s (%s), backbone %s, trained=%s",
                time.perf_counter() - started,
                identity.checkpoint,
                f"seed ensemble of {members} heads" if members > 1 else "one head",
                identity.backbone.key(),
                identity.trained,
            )
            self._ready.set()
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def identity(self) -> ModelInfo | None:
        return None if self._engine is None else self._engine.identity

    @property
    def acceleration(self) -> AccelerationReport | None:
        """Which path serves each stage (shift, head, backbone) and why; None until the model is loaded."""
        return None if self._engine is None else self._engine.acceleration

    @property
    def device(self) -> str | None:
        if self._engine is None:
            return None
        return str(getattr(self._engine, "device", self.settings.device))

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        """Block (a worker thread) until loading finished either way; True if the engine is usable."""
        self._done.wait(timeout)
        return self.ready

    def engine(self) -> AnalysisEngine:
        """The engine for a request, or a 503 that says why there is none."""
        if self._engine is not None:
            return self._engine
        if self.state == "failed":
            raise ApiError(503, "model_failed", f"the model failed to load: {self.error}")
        raise ApiError(
            503, "model_loading", "the model is still loading; retry shortly", headers={"Retry-After": "5"}
        )
