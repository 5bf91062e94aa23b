"""Prometheus metrics of one app instance (its own registry, so several apps in one process never collide).

Model-side metrics carry a `source` label: `file` for uploaded videos, `live` for streams (added later), so one
dashboard shows both. Latency histograms for file analysis observe one value per analysed video.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model.acceleration import AccelerationReport

CONTENT_TYPE = CONTENT_TYPE_LATEST

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_JOB = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "refinevad_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "refinevad_http_request_duration_seconds",
            "time to answer an HTTP request",
            ["method", "route"],
            buckets=_FAST,
            registry=r,
        )
        self.upload_bytes = Counter(
            "refinevad_upload_bytes", "bytes of video accepted by uploads", registry=r
        )
        self.uploads_rejected = Counter(
            "refinevad_uploads_rejected", "uploads refused, by reason", ["reason"], registry=r
        )
        self.jobs_submitted = Counter(
            "refinevad_jobs_submitted", "analysis jobs accepted", ["mode"], registry=r
        )
        self.jobs_finished = Counter(
            "refinevad_jobs_finished", "analysis jobs that reached a final state", ["status"], registry=r
        )
        self.job_duration = Histogram(
            "refinevad_job_duration_seconds",
            "time a worker spent on a job, by final state",
            ["status"],
            buckets=_JOB,
            registry=r,
        )
        self.queue_depth = Gauge("refinevad_queue_depth", "items waiting, by queue", ["queue"], registry=r)
        self.jobs_running = Gauge("refinevad_jobs_running", "jobs being analysed now", registry=r)
        self.frames = Counter(
            "refinevad_frames_processed", "video frames decoded and scored", ["source"], registry=r
        )
        self.snippets = Counter("refinevad_snippets_processed", "snippets scored", ["source"], registry=r)
        self.decode_latency = Histogram(
            "refinevad_decode_latency_seconds",
            "time spent decoding video",
            ["source"],
            buckets=_FAST,
            registry=r,
        )
        self.backbone_latency = Histogram(
            "refinevad_backbone_latency_seconds",
            "time spent in the backbone (per video for files, per batch for live)",
            ["source"],
            buckets=_FAST,
            registry=r,
        )
        self.head_latency = Histogram(
            "refinevad_head_latency_seconds",
            "time spent in the RefineVAD head (per video for files, per window batch for live)",
            ["source"],
            buckets=_FAST,
            registry=r,
        )
        self.model_ready = Gauge("refinevad_model_ready", "1 once the model is loaded and warm", registry=r)
        self.acceleration_path = Gauge(
            "refinevad_acceleration_path",
            "1 for the path serving each inference stage; `reason`: passed (an accelerated path passed its "
            "start-up check), no_candidate, not_applicable, or why the candidates were bypassed "
            "(unavailable, error, mismatch)",
            ["stage", "path", "accelerated", "reason"],
            registry=r,
        )
        self.acceleration_check_error = Gauge(
            "refinevad_acceleration_check_error",
            "largest difference of each checked accelerated path from its reference at start-up",
            ["stage", "candidate", "outcome"],
            registry=r,
        )
        self.queue_depth.labels(queue="jobs").set(0)

    def set_acceleration(self, report: AccelerationReport) -> None:
        self.acceleration_path.clear()
        self.acceleration_check_error.clear()
        for stage, path in report.stages().items():
            self.acceleration_path.labels(
                stage=stage,
                path=path.path,
                accelerated=str(path.accelerated).lower(),
                reason=path.reason_code,
            ).set(1)
            for check in path.checks:
                if check.max_error is not None:
                    self.acceleration_check_error.labels(
                        stage=stage, candidate=check.name, outcome=check.outcome
                    ).set(check.max_error)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route template (not raw path, to bound label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.http_requests.labels(method=method, route=template, status=str(status)).inc()
            self.metrics.http_latency.labels(method=method, route=template).observe(
                time.perf_counter() - start
            )
