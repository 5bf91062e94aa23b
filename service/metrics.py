"""Prometheus metrics of one app instance (its own registry, so several apps in one process never collide).

Model-side metrics carry a `source` label: `file` for uploaded videos, `live` for streams (added later), so one
dashboard shows both. Latency histograms for file analysis observe one value per analysed video.

Other processes' metrics (a cluster's live workers) can be merged into what `render` exposes (`merge_remote`):
their exposition text is parsed with prometheus_client's parser and each of their samples labelled with the
process it came from, so one scrape of an API replica shows the whole cluster's live pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model.acceleration import AccelerationReport

CONTENT_TYPE = CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

# The model's families (frames, snippets, stage latencies, readiness, acceleration): in a cluster each live
# worker's model has its own, shown beside the replica's.
MODEL_FAMILIES = frozenset(
    {
        "refinevad_frames_processed",
        "refinevad_snippets_processed",
        "refinevad_decode_latency_seconds",
        "refinevad_backbone_latency_seconds",
        "refinevad_head_latency_seconds",
        "refinevad_model_ready",
        "refinevad_acceleration_path",
        "refinevad_acceleration_check_error",
    }
)

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
        self._remote: _RemoteSource | None = None

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

    def merge_remote(
        self,
        fetch: Callable[[], Mapping[str, str]],
        *,
        label: str,
        families: frozenset[str],
        replaced: frozenset[str] = frozenset(),
    ) -> None:
        """From now on `render` also shows other processes' metrics: `fetch` returns each process's exposition
        text (`generate_latest`) by its name, which becomes the value of `label` on its samples. Only
        `families` are taken from them; this registry's own `replaced` families (idle here, measured by those
        processes) are left out. `fetch` runs on every render; it must be quick and must not raise."""
        self._remote = _RemoteSource(fetch, label, families, replaced)

    def render(self) -> bytes:
        """The exposition text (Prometheus text format 0.0.4); with `merge_remote`, the remote processes' too."""
        if self._remote is None:
            return generate_latest(self.registry)
        return generate_latest(MergedMetrics(self.registry, self._remote.fetch(), self._remote))


@dataclass(frozen=True, slots=True)
class _RemoteSource:
    fetch: Callable[[], Mapping[str, str]]
    label: str
    families: frozenset[str]
    replaced: frozenset[str]


class MergedMetrics:
    """A collector (prometheus_client's protocol: `collect`) over `local`'s families with other processes'
    families merged in: a family both have gets the remote samples appended, each labelled `label=<process>`;
    `created` timestamps of remote counters and histograms are dropped (they are optional in the text format,
    and would collide with the local ones). A remote text that does not parse is skipped (logged)."""

    def __init__(self, local: CollectorRegistry, remote: Mapping[str, str], source: _RemoteSource) -> None:
        self.local = local
        self.remote = remote
        self.source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for family in self.local.collect():
            if family.name not in self.source.replaced:
                merged[family.name] = family
        for process, text in self.remote.items():
            try:
                families = list(text_string_to_metric_families(text))
            except Exception:  # whatever the parser raises: a scrape must not fail for one process
                logger.warning("metrics of %s=%s do not parse; left out", self.source.label, process)
                continue
            for family in families:
                if family.name not in self.source.families:
                    continue  # also drops the `<name>_created` families the parser makes of timestamps
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(family.name, family.documentation, family.type)
                elif target.type != family.type:
                    continue  # another version's metric under this name: not mixed in
                target.samples.extend(
                    sample._replace(labels={**sample.labels, self.source.label: process})
                    for sample in family.samples
                )
        yield from merged.values()


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
