"""The live scheduler: one thread that scores every stream's newest snippet with shared, batched model calls.

Each cycle it takes the waiting snippet of every stream (at most one each; readers drop older ones), encodes them
with ONE backbone call per frame size (cameras of the same resolution share a call), appends the features to the
streams' device-side windows, and runs the head once per group of streams whose windows hold the same number
of snippets (all full windows share one call). From each window it reads two scores:

- the newest snippet's, sent as `provisional`: MoTAR's temporal shift mixes in the next snippet, which is not
  there yet;
- the previous snippet's, now that its next neighbour exists, sent as `final`. Only final scores feed the
  event detector.

Messages are serialised once here and handed to the dispatcher, which fans them out to every publisher (WebSocket
hub, webhook, MQTT, event media). A failing cycle is logged and
counted, never fatal; a snippet whose frames make the backbone fail is skipped alone.

Each cycle also looks at every stream's reader: one that stalled, lost its source or stopped (end of a replayed
file) gets its open event closed at once at its last scored snippet, with the reason, announced in an `event`
message (there is no new snippet to carry it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from model.events import EventPolicy
from model.inference import AnalysisEngine
from model.scene import NoveltySmoother, fuse
from model.scene_familiarity import SceneCheck
from service.live.events import LiveEventStore, StreamEvents
from service.live.messages import EndReason, EventNotice, GapInfo, SnippetMessage, StateMessage
from service.live.metrics import LiveMetrics
from service.live.readers import STREAM_STATES, RateMeter, Snippet, StreamReader, StreamState
from service.live.window import FeatureWindows
from service.model_service import ModelService
from service.publishers.base import EventChanged, SnippetsScored, StateChanged
from service.publishers.dispatcher import Dispatcher
from service.scene.registry import SceneRegistry

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5
SCENE_METRICS_INTERVAL_S = 5.0
# Reader states that mean no more scores are coming for now, and why an open event ends then.
_ENDED_BY_STATE: dict[str, EndReason] = {
    "stalled": "source_stalled",
    "reconnecting": "source_lost",
    "stopped": "stream_ended",
}


@dataclass(eq=False)
class LiveStream:
    """A registered stream's runtime: its reader, and what the scheduler keeps for it."""

    id: str
    name: str
    reader: StreamReader
    policy: EventPolicy
    created_at: float
    slot: int | None = None
    events: StreamEvents | None = None
    previous: Snippet | None = None
    snippets_processed: int = 0
    last_latency_s: float | None = None
    last_score: float | None = None
    last_scene: SceneCheck | None = None
    previous_scene_score: float | None = None  # the final scene score of `previous`, for its final message
    scene_smoother: NoveltySmoother | None = None  # the stream's run of scene novelties (SceneModel.score)
    rate_processed: RateMeter = field(default_factory=RateMeter)
    published_state: tuple[str, str | None] | None = None
    # An open event taken over from the stream's previous worker (`LiveEventStore.take_over`), continued here.
    handover: dict[str, Any] | None = None
    moved: bool = False  # removed because another worker runs it now


class LiveScheduler:
    def __init__(
        self,
        model: ModelService,
        dispatcher: Dispatcher,
        event_store: LiveEventStore,
        metrics: LiveMetrics,
        window: int,
        scenes: SceneRegistry | None = None,
        store_handover: bool = False,
    ) -> None:
        """`scenes`: the cameras' scene models (None: scene models off). `store_handover`: streams' open events
        keep the state another worker continues them from (cluster mode; `StreamEvents`)."""
        self.model = model
        self.store_handover = store_handover
        self.scenes = scenes
        self.dispatcher = dispatcher
        self.event_store = event_store
        self.metrics = metrics
        self.window = window
        self._streams: dict[str, LiveStream] = {}
        self._removed: list[LiveStream] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-scheduler", daemon=True)
        self._windows: FeatureWindows | None = None
        self.cycles = 0
        self._scene_metrics_at = 0.0

    # -- registry (any thread) -----------------------------------------------------------------------------
    def add(self, stream: LiveStream) -> None:
        with self._lock:
            self._streams[stream.id] = stream
        self.wake()

    def remove(self, stream_id: str, moved: bool = False) -> LiveStream | None:
        """Stop scheduling a stream. `moved`: it runs on another worker next, which continues its open event, so
        the event is left open (its handover state is stored) rather than closed."""
        with self._lock:
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                stream.moved = moved
                self._removed.append(stream)
        self.wake()
        return stream

    def streams(self) -> list[LiveStream]:
        with self._lock:
            return list(self._streams.values())

    def wake(self) -> None:
        self._wake.set()

    @property
    def windows_in_use(self) -> int:
        return self._windows.in_use if self._windows is not None else 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    # -- the thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set() and not self.model.wait_until_loaded(timeout=IDLE_WAIT_S):
            self._publish_states()
            if self.model.state == "failed":
                logger.error("live scheduler: the model failed to load; streams are read but not scored")
                self._stop.wait(30.0)
        if self._stop.is_set():
            return
        engine = self.model.engine()
        self._windows = FeatureWindows(self.window, engine.backbone.dim, engine.device)
        logger.info("live scheduler running: window %d snippets on %s", self.window, engine.device)
        while not self._stop.is_set():
            self._wake.wait(IDLE_WAIT_S)
            self._wake.clear()
            try:
                self._release_removed()
                self._watch_sources()
                items = self._collect(engine)
                if items:
                    self._process(engine, items)
                    self.cycles += 1
                if self.scenes is not None:
                    self.scenes.flush()
                    self._scene_metrics()
            except Exception:
                self.metrics.errors.inc()
                logger.exception("live scheduler cycle failed; continuing")
        self._release_removed()
        if self.scenes is not None:
            self.scenes.flush(force=True)
        for stream in self.streams():
            self._finish_events(stream, "service_stopped")

    def _scene_metrics(self) -> None:
        assert self.scenes is not None
        now = time.monotonic()
        if now - self._scene_metrics_at < SCENE_METRICS_INTERVAL_S:
            return
        self._scene_metrics_at = now
        counts = self.scenes.states()
        for state in ("learning", "calibrated"):
            self.metrics.scene_cameras.labels(state=state).set(counts[state])
        with self._lock:
            running = set(self._streams)
        self.metrics.scene_cameras.labels(state="none").set(max(0, len(running) - counts["cameras"]))
        self.metrics.scene_bank_bytes.set(counts["bytes"])

    def _release_removed(self) -> None:
        with self._lock:
            removed, self._removed = self._removed, []
        for stream in removed:
            # Closing the stream's event may fail (database busy); its window slot is freed whatever happens,
            # and the other removed streams are still handled.
            try:
                if not stream.moved:
                    self._finish_events(stream, "stream_removed")
            except Exception:
                self.metrics.errors.inc()
                logger.exception("stream %s: closing its open event on removal failed", stream.id)
            if stream.slot is not None and self._windows is not None:
                self._windows.release(stream.slot)
                stream.slot = None

    def _finish_events(self, stream: LiveStream, reason: EndReason) -> None:
        """Close the stream's open event at its last scored snippet, and announce it in an `event` message.

        Called again on every cycle while the source is away: the snippets scored before it went stay closed off
        (their late final scores open no event), whether or not an event was open then.
        """
        if stream.events is None or stream.previous is None:
            return
        last = stream.previous.index
        notice = stream.events.finish(reason, through_index=last)
        if notice is None:
            return
        logger.info("stream %s: closed its open event %d (%s)", stream.id, notice.event_id, reason)
        # No snippet message carries this end: WebSocket clients get it as an `event` message at that index.
        self.dispatcher.publish(EventChanged(stream.id, stream.name, notice, standalone_index=last))

    def _watch_sources(self) -> None:
        """Publish reader state changes, then close the events of streams whose source went away.

        One reading of each reader's state serves both, so a client always gets the `state` message before the
        `event` end it causes.
        """
        self._close_events_without_source(self._publish_states())

    def _close_events_without_source(self, states: list[tuple[LiveStream, StreamState]]) -> None:
        """Streams whose reader stalled, lost its source or stopped: no scores are coming to close their events.

        `states`: every stream's state as `_publish_states` just read it (and published, where it changed).
        """
        for stream, state in states:
            reason = _ENDED_BY_STATE.get(state)
            # A reader asked to stop (service shutting down) is not a stream that ended: `stop` closes those.
            if reason is None or (state == "stopped" and not stream.reader.end_of_replay):
                continue
            try:
                self._finish_events(stream, reason)
            except Exception:
                self.metrics.errors.inc()
                logger.exception("stream %s: closing its open event (%s) failed", stream.id, reason)

    def _publish_states(self) -> list[tuple[LiveStream, StreamState]]:
        """Publish a `state` message for each stream whose reader state changed; returns every stream's state."""
        counts = dict.fromkeys(STREAM_STATES, 0)
        states = []
        for stream in self.streams():
            state, last_error = stream.reader.status()
            states.append((stream, state))
            counts[state] += 1
            if (state, last_error) != stream.published_state:
                stream.published_state = (state, last_error)
                message = StateMessage(
                    stream_id=stream.id,
                    state=state,
                    last_error=last_error,
                    wall_clock=time.time(),
                )
                self.dispatcher.publish(
                    StateChanged(stream.id, stream.name, message, message.model_dump_json())
                )
        for state, n in counts.items():
            self.metrics.streams.labels(state=state).set(n)
        return states

    def _collect(self, engine: AnalysisEngine) -> list[tuple[LiveStream, Snippet]]:
        assert self._windows is not None
        items = []
        for stream in self.streams():
            snippet = stream.reader.take()
            if snippet is None:
                continue
            if stream.slot is None:
                stream.slot = self._windows.acquire()
                stream.events = StreamEvents(
                    stream.id,
                    stream.name,
                    stream.policy,
                    engine.category_names,
                    self.event_store,
                    handover=stream.handover,
                    store_handover=self.store_handover,
                    on_close=None if self.scenes is None else partial(self.scenes.keep_event, stream.id),
                )
                stream.handover = None
            items.append((stream, snippet))
        return items

    def _encode(
        self, engine: AnalysisEngine, snippets: list[Snippet]
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
        """Features `[k, D]`, a mask of the snippets that encoded and, with scene models, their region
        descriptors `[k, R, d]`; one backbone (and descriptor) call per frame shape."""
        features = torch.zeros(len(snippets), engine.backbone.dim, device=engine.device)
        descriptor = engine.scene_descriptor
        regions = (
            None
            if self.scenes is None
            else np.zeros((len(snippets), descriptor.regions, descriptor.dim), np.float32)
        )
        ok = np.ones(len(snippets), dtype=bool)
        shapes: dict[tuple[int, ...], list[int]] = {}
        for i, snippet in enumerate(snippets):
            shapes.setdefault(snippet.frames.shape, []).append(i)
        for indices in shapes.values():
            try:
                batch = _stacked([snippets[i].frames for i in indices], engine.device)
                described = None
                if regions is not None:
                    host = batch.cpu().numpy() if isinstance(batch, torch.Tensor) else batch
                    described = engine.describe_regions_async(host)  # made while the backbone runs
                features[indices] = engine.backbone.encode_snippets(batch).to(features.dtype)
                if described is not None:
                    regions[indices] = described.result()
            except Exception:
                # Isolate the culprit: encode this group one snippet at a time.
                logger.exception(
                    "live backbone call failed for %d snippets; retrying one by one", len(indices)
                )
                for i in indices:
                    try:
                        features[i] = engine.backbone.encode_snippets(snippets[i].frames[None])[0]
                        if regions is not None:
                            regions[i] = descriptor.describe(snippets[i].frames[None])[0]
                    except Exception as exc:
                        ok[i] = False
                        logger.warning(
                            "stream %s: snippet %d skipped: %s", snippets[i].stream_id, snippets[i].index, exc
                        )
        return features, ok, regions

    @torch.inference_mode()
    def _process(self, engine: AnalysisEngine, items: list[tuple[LiveStream, Snippet]]) -> None:
        assert self._windows is not None
        snippets = [snippet for _, snippet in items]
        t0 = time.perf_counter()
        features, ok, regions = self._encode(engine, snippets)
        t1 = time.perf_counter()
        self.metrics.service.backbone_latency.labels(source="live").observe(t1 - t0)
        self.metrics.batch_size.observe(len(items))
        if not ok.all():
            keep = np.flatnonzero(ok)
            items = [items[i] for i in keep]
            features = features[torch.as_tensor(keep, device=features.device)]
            regions = None if regions is None else regions[keep]
            if not items:
                return
        slots = np.array([stream.slot for stream, _ in items], dtype=np.int64)
        counts = self._windows.append(slots, features)
        try:
            k = len(items)
            newest = np.empty(k, dtype=np.float64)
            previous = np.full(k, np.nan)
            weights = np.empty((k, len(engine.category_names)), dtype=np.float64)
            scene = engine.scene
            # Scene distances at the newest snippet and at the one before it (whose final score this is), each
            # over its own trailing window: offline judges every snippet so.
            distances = np.full(k, np.nan)
            previous_distances = np.full(k, np.nan)
            for n in np.unique(counts):
                sel = np.flatnonzero(counts == n)
                window = self._windows.gather(slots[sel], int(n))
                out = engine.head(window)
                if scene is not None:
                    d = scene.snippet_distances(window)
                    distances[sel] = scene.median_at(d).cpu().numpy()
                    if n >= 2:
                        previous_distances[sel] = scene.median_at(d, before_last=1).cpu().numpy()
                scores = out.scores.float().cpu().numpy()
                newest[sel] = scores[:, -1]
                if n >= 2:
                    previous[sel] = scores[:, -2]
                weights[sel] = out.category_weights.float().cpu().numpy()
            self.metrics.service.head_latency.labels(source="live").observe(time.perf_counter() - t1)
            frames = engine.spec.frames_per_snippet
            self.metrics.service.snippets.labels(source="live").inc(k)
            self.metrics.service.frames.labels(source="live").inc(k * frames)
            names = engine.category_names
            # A final score's check covers at most window - 1 snippets: a shorter live window lowers the bar.
            min_snippets = max(1, min(engine.config.scene_check_min_snippets, self.window - 1))
            for b, (stream, snippet) in enumerate(items):
                check = previous_check = None
                scene_score = None
                if self.scenes is not None and regions is not None:
                    if stream.scene_smoother is None:
                        stream.scene_smoother = NoveltySmoother(self.scenes.settings.smoothing_radius)
                    # The newest snippet's provisional scene score, and the previous one's final (smoothed with
                    # this one, as offline), which replaces its provisional one below.
                    scene_score, previous_final = self.scenes.live_scores(
                        stream.id, regions[b], stream.scene_smoother
                    )
                    if previous_final is not None:
                        stream.previous_scene_score = previous_final
                if scene is not None:
                    check = scene.verdict(float(distances[b]), min(int(counts[b]), scene.window))
                    if not np.isnan(previous_distances[b]):
                        previous_check = scene.verdict(
                            float(previous_distances[b]), min(int(counts[b]) - 1, scene.window)
                        )
                    if not check.familiar:
                        self.metrics.unfamiliar_snippets.inc()
                # The head's score counts once its familiarity check has judged enough snippets of a view it
                # knows (offline: AnalysisEngine.head_trusted). Otherwise it is no evidence either way, like a
                # damaged snippet's, unless the camera's own scene model scores the snippet instead.
                trusted_previous = _trusted(previous_check, min_snippets, engine.withholds_unfamiliar)
                trusted_newest = _trusted(check, min_snippets, engine.withholds_unfamiliar)
                previous_scene = stream.previous_scene_score
                withheld = not trusted_previous and previous_scene is None
                distribution = dict(zip(names, weights[b].tolist(), strict=True))
                dominant = names[int(np.argmax(weights[b]))]
                threshold = stream.policy.enter_threshold
                out_items: list[tuple[int, str]] = []
                final: SnippetMessage | None = None
                notices: list[EventNotice] = []
                prev = stream.previous
                if prev is not None and not np.isnan(previous[b]) and stream.events is not None:
                    final_score = _fused(float(previous[b]), previous_scene, trusted_previous)
                    if withheld and stream.events.active:
                        # The model can no longer judge this view: an open event ends at its last high snippet.
                        ended = stream.events.finish("scene_unfamiliar")
                        notices = [ended] if ended is not None else []
                    notices += stream.events.update(
                        prev.index,
                        prev.start_s,
                        prev.end_s,
                        prev.captured_at,
                        final_score,
                        weights[b],
                        degraded=prev.degraded or withheld,
                        outage_s=prev.gap.outage_s if prev.gap is not None else 0.0,
                    )
                    final = self._message(
                        prev,
                        "final",
                        (final_score, float(previous[b]), previous_scene),
                        distribution,
                        _named(dominant, float(previous[b]), previous_scene, threshold, trusted_previous),
                        notices,
                        previous_check,
                    )
                    out_items.append((prev.index, final.model_dump_json()))
                newest_score = _fused(float(newest[b]), scene_score, trusted_newest)
                message = self._message(
                    snippet,
                    "provisional",
                    (newest_score, float(newest[b]), scene_score),
                    distribution,
                    _named(dominant, float(newest[b]), scene_score, threshold, trusted_newest),
                    [],
                    check,
                )
                if self.scenes is not None and regions is not None and not snippet.degraded:
                    self.scenes.observe(
                        stream.id,
                        regions[b],
                        _snippet_seconds(snippet, frames),
                        newest_score,
                        head_flags=trusted_newest and float(newest[b]) >= threshold,
                        start_s=snippet.start_s,
                        end_s=snippet.end_s,
                    )
                stream.previous_scene_score = scene_score
                out_items.append((snippet.index, message.model_dump_json()))
                latency = time.monotonic() - snippet.captured_mono
                self.metrics.latency.observe(latency)
                stream.last_latency_s = latency
                stream.last_score = newest_score
                stream.last_scene = check
                stream.previous = snippet
                stream.snippets_processed += 1
                stream.rate_processed.add(frames)
                if snippet.gap is not None and "lag" in snippet.gap.reasons:
                    self.metrics.dropped_frames.inc(snippet.gap.dropped_frames)
                self.dispatcher.publish(SnippetsScored(stream.id, stream.name, out_items, final))
                for notice in notices:
                    self.dispatcher.publish(EventChanged(stream.id, stream.name, notice))
        except Exception:
            # The windows already hold these snippets: keep each stream's `previous` in step with its window,
            # or the next cycle's final score (read one before the newest) would carry this snippet's score
            # under the older snippet's index.
            for stream, snippet in items:
                stream.previous = snippet
            raise

    @staticmethod
    def _message(
        snippet: Snippet,
        status: str,
        scores: tuple[float, float, float | None],
        distribution: dict[str, float],
        dominant: str | None,
        notices: list[EventNotice],
        scene: SceneCheck | None = None,
    ) -> SnippetMessage:
        now = time.time()
        score, head_score, scene_score = scores
        return SnippetMessage(
            stream_id=snippet.stream_id,
            index=snippet.index,
            status=status,  # type: ignore[arg-type]
            start_s=snippet.start_s,
            end_s=snippet.end_s,
            captured_at=snippet.captured_at,
            wall_clock=now,
            latency_s=round(now - snippet.captured_at, 4),
            score=score,
            head_score=head_score,
            scene_score=scene_score,
            categories=distribution,
            dominant_category=dominant,
            gap=GapInfo.of(snippet.gap),
            degraded=snippet.degraded,
            scene=scene,
            events=notices,
        )


def _trusted(check: SceneCheck | None, min_snippets: int, withholds: bool) -> bool:
    """Whether the head's score counts at a snippet with this familiarity verdict (None: no check)."""
    if check is None or not withholds:
        return True
    return check.familiar and check.snippets >= min_snippets


def _fused(head: float, scene: float | None, trusted: bool) -> float:
    return float(fuse(np.array([head]), None if scene is None else np.array([scene]), np.array([trusted]))[0])


def _named(dominant: str, head: float, scene: float | None, threshold: float, trusted: bool) -> str | None:
    """The head's category, or None where only the scene model finds the snippet unusual."""
    if scene is not None and scene >= threshold and not (trusted and head >= threshold):
        return None
    return dominant


def _snippet_seconds(snippet: Snippet, frames: int) -> float:
    """Footage a snippet covers: first to last frame time plus one frame interval."""
    span = max(0.0, snippet.end_s - snippet.start_s)
    return span * frames / (frames - 1) if frames > 1 else span


def _stacked(frames: list[np.ndarray], device: torch.device) -> np.ndarray | torch.Tensor:
    """The snippets' frames as one `[k, F, H, W, 3]` batch. For a CUDA backbone they are stacked straight into
    page-locked memory (torch's cached host allocator), so the upload needs no further copy on this thread:
    at 1080p a snippet of 4 sampled frames is 24 MB, and each copy of a 100-camera batch costs milliseconds."""
    if device.type != "cuda":
        return np.stack(frames)
    pinned = torch.empty((len(frames), *frames[0].shape), dtype=torch.uint8, pin_memory=True)
    np.stack(frames, out=pinned.numpy())
    return pinned
