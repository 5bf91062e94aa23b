"""Prometheus metrics of the live pipeline, registered in the app's registry (no per-stream labels, so adding and
removing streams never grows the metric set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from service.live.readers import STREAM_STATES
from service.metrics import ServiceMetrics

# What the pipeline measures (readers, scheduler, publishers), as opposed to an API process's WebSocket clients:
# in a cluster these come from the live workers, and an API replica's own copies are idle (`ClusterStreams`).
PIPELINE_FAMILIES = frozenset(
    {
        "refinevad_live_latency_seconds",
        "refinevad_live_dropped_frames",
        "refinevad_live_unfamiliar_snippets",
        "refinevad_live_streams",
        "refinevad_live_batch_snippets",
        "refinevad_live_scheduler_errors",
        "refinevad_live_publisher_errors",
        "refinevad_scene_cameras",
        "refinevad_scene_bank_bytes",
    }
)

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class LiveMetrics:
    def __init__(self, service: ServiceMetrics) -> None:
        r = service.registry
        self.service = service
        self.latency = Histogram(
            "refinevad_live_latency_seconds",
            "from the capture of a snippet's last frame to its provisional score message",
            buckets=_LATENCY,
            registry=r,
        )
        self.dropped_frames = Counter(
            "refinevad_live_dropped_frames", "frames not scored because processing lagged", registry=r
        )
        self.unfamiliar_snippets = Counter(
            "refinevad_live_unfamiliar_snippets",
            "snippets whose window was unlike the model's training footage (scene familiarity check)",
            registry=r,
        )
        self.streams = Gauge("refinevad_live_streams", "registered streams, by state", ["state"], registry=r)
        self.clients = Gauge("refinevad_live_websocket_clients", "connected WebSocket clients", registry=r)
        self.scene_cameras = Gauge(
            "refinevad_scene_cameras", "cameras by scene-model state (model.scene)", ["state"], registry=r
        )
        self.scene_bank_bytes = Gauge(
            "refinevad_scene_bank_bytes", "bytes held by the cameras' scene memory banks", registry=r
        )
        self.clients_dropped = Counter(
            "refinevad_live_websocket_clients_dropped",
            "WebSocket clients dropped for falling behind",
            registry=r,
        )
        self.batch_size = Histogram(
            "refinevad_live_batch_snippets",
            "snippets (one per stream) in one scheduler batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.errors = Counter("refinevad_live_scheduler_errors", "scheduler cycles that failed", registry=r)
        self.publisher_errors = Counter(
            "refinevad_live_publisher_errors",
            "messages a publisher (websocket, webhook, mqtt, event-media) failed to take",
            ["publisher"],
            registry=r,
        )
        for state in STREAM_STATES:
            self.streams.labels(state=state).set(0)
