"""Merging other processes' metrics into an API replica's GET /metrics (a cluster's live workers): real
prometheus_client registries on both sides, the workers' exposition text parsed back, every sample of theirs
labelled with its worker, one family per name in the result, the replica's idle pipeline metrics left out."""

from __future__ import annotations

import collections

from prometheus_client.parser import text_string_to_metric_families

from service.live.metrics import PIPELINE_FAMILIES, LiveMetrics
from service.metrics import MODEL_FAMILIES, ServiceMetrics


def _worker(dropped: int, latencies: list[float], streams: int) -> str:
    """The exposition of a live worker's registry (its model and pipeline), as `LiveWorker.metrics_text`."""
    metrics = ServiceMetrics()
    live = LiveMetrics(metrics)
    live.dropped_frames.inc(dropped)
    for latency in latencies:
        live.latency.observe(latency)
    live.streams.labels(state="live").set(streams)
    metrics.snippets.labels(source="live").inc(10 * streams)
    metrics.model_ready.set(1)
    metrics.upload_bytes.inc(99)  # not a live family: never taken from a worker
    return metrics.render().decode()


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _replica(workers: dict[str, str]) -> ServiceMetrics:
    replica = ServiceMetrics()
    live = LiveMetrics(replica)  # what the replica's own (idle) pipeline registers
    live.clients.set(2)  # WebSocket clients are the replica's own
    replica.snippets.labels(source="file").inc(4)
    replica.merge_remote(
        lambda: workers,
        label="worker",
        families=PIPELINE_FAMILIES | MODEL_FAMILIES,
        replaced=PIPELINE_FAMILIES,
    )
    return replica


def test_worker_metrics_are_merged_labelled_by_worker() -> None:
    text = _replica({"0": _worker(5, [0.2, 0.7], 3), "1": _worker(1, [4.0], 1)}).render().decode()
    # Valid text format: one HELP/TYPE per family, however many processes contributed to it.
    types = collections.Counter(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE"))
    assert [name for name, n in types.items() if n > 1] == []
    samples = _samples(text)
    w0, w1 = frozenset({("worker", "0")}), frozenset({("worker", "1")})
    assert samples[("refinevad_live_dropped_frames_total", w0)] == 5
    assert samples[("refinevad_live_dropped_frames_total", w1)] == 1
    assert samples[("refinevad_live_streams", w0 | {("state", "live")})] == 3
    assert samples[("refinevad_live_latency_seconds_count", w0)] == 2
    assert samples[("refinevad_live_latency_seconds_bucket", w0 | {("le", "0.25")})] == 1
    assert samples[("refinevad_live_latency_seconds_bucket", w1 | {("le", "5.0")})] == 1
    assert samples[("refinevad_model_ready", w1)] == 1
    # The model's families hold the replica's own samples beside the workers'.
    assert samples[("refinevad_snippets_processed_total", frozenset({("source", "file")}))] == 4
    assert samples[("refinevad_snippets_processed_total", w0 | {("source", "live")})] == 30
    assert samples[("refinevad_model_ready", frozenset())] == 0
    # The replica's idle pipeline metrics are not shown (they would read as "nothing dropped, no stream").
    assert ("refinevad_live_dropped_frames_total", frozenset()) not in samples
    assert not any(
        name == "refinevad_live_streams" and "worker" not in dict(labels) for name, labels in samples
    )
    # What only the replica measures stays the replica's; what is not live is not taken from workers.
    assert samples[("refinevad_live_websocket_clients", frozenset())] == 2
    assert not any(dict(labels).get("worker") for name, labels in samples if "websocket" in name)
    assert samples[("refinevad_upload_bytes_total", frozenset())] == 0
    assert ("refinevad_upload_bytes_total", w0) not in samples


def test_a_worker_missing_or_unparsable_is_left_out() -> None:
    workers = {"0": _worker(5, [], 1), "1": "refinevad_live_streams{state=oops"}
    samples = _samples(_replica(workers).render().decode())
    assert samples[("refinevad_live_dropped_frames_total", frozenset({("worker", "0")}))] == 5
    assert not any(dict(labels).get("worker") == "1" for _name, labels in samples)
    # With no worker answering, the pipeline families are simply absent, and the rest renders as always.
    alone = _samples(_replica({}).render().decode())
    assert not any(name.startswith("refinevad_live_dropped") for name, _labels in alone)
    assert alone[("refinevad_live_websocket_clients", frozenset())] == 2
