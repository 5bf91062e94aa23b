"""Live streams as an API replica of a cluster sees them: registrations in the shared store, run by the live
workers (Ray actors), their messages read back from the store and fanned out to this replica's WebSocket clients
by the same `LiveHub` a single node uses. Any replica serves any stream.

Every replica also watches the live workers' state in Ray and places them one per node (`placement.LiveWorkers`):
the streams of a worker Ray reports restarting or dead (its process or machine died) are re-assigned in the store
to the least loaded live workers, which already have the model loaded and resume them within seconds (the new
owners are told at once). When a worker is up again (restarted, or created on a node that joined) and its model is
loaded, streams move back to it until every worker runs within one stream of the others (`placement.rebalance`).

The replica's GET /metrics shows the live workers' pipeline and model metrics, labelled `worker`, gathered from
them at each scrape (`worker_metrics`); the replica's own idle copies of the pipeline's metrics are left out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import ray
from prometheus_client import Counter, Gauge

from model.scene import SceneStatus
from service.cluster.messages import MessageLog
from service.cluster.placement import NOT_PLACED, LiveWorkers, rebalance
from service.cluster.runtime import READS_GROUP
from service.cluster.scenes import RoutedScenes
from service.live.hub import LiveHub
from service.live.manager import LiveStreamManager
from service.live.metrics import PIPELINE_FAMILIES
from service.live.schemas import StreamCreate, StreamView
from service.live.store import StreamRecord
from service.live.urls import mask_url
from service.metrics import MODEL_FAMILIES, ServiceMetrics
from service.model_service import ModelService
from service.settings import ServiceSettings
from service.storage import Database, StorageError

logger = logging.getLogger(__name__)

_RELAY_INTERVAL_S = 0.1
_VIEW_TIMEOUT_S = 2.0
_WATCH_INTERVAL_S = 0.25
# How long a rebalance waits for the old owners to stop the moved streams before the new owners start them.
_HANDOFF_TIMEOUT_S = 5.0
# Ray's actor states of a worker whose process or node died, or that has no node: its streams move at once.
_LOST = frozenset({"RESTARTING", "DEAD", NOT_PLACED})
# A worker Ray has not placed yet (PENDING_CREATION: starting, or no GPU share free anywhere) keeps its streams
# this long, so a cluster that is starting up keeps its spread, then they move too.
_UNPLACED = frozenset({"PENDING_CREATION", "DEPENDENCIES_UNREADY"})
_UNPLACED_GRACE_S = 60.0


class RelayHub(LiveHub):
    """A `LiveHub` fed from the message log: a stream's channel is filled with its newest stored messages when
    its first client here subscribes, then followed (`follow_once`) for as long as the stream exists."""

    def __init__(self, log: MessageLog, client_queue: int, replay: int, on_drop: Any = None) -> None:
        super().__init__(client_queue, replay, on_drop)
        self.log = log
        self.cursors: dict[str, int] = {}

    def subscribe(self, stream_id: str, since: int | None = None):  # type: ignore[no-untyped-def]
        if stream_id not in self.cursors:
            # The stream's kept messages, so `since` resumes across replicas and worker restarts.
            self.open_channel(stream_id)
            kept = self.log.latest(stream_id, max(self.replay, 1))
            self.cursors[stream_id] = kept[-1].seq if kept else -1
            self.publish(stream_id, [(m.snippet_index, m.text) for m in kept])
        return super().subscribe(stream_id, since)

    def close_stream(self, stream_id: str) -> None:
        super().close_stream(stream_id)
        self.cursors.pop(stream_id, None)

    def follow_once(self) -> int:
        """Publish what was stored since the last call; the number of messages."""
        messages = self.log.after(dict(self.cursors))
        for message in messages:
            if message.stream_id in self.cursors and message.seq > self.cursors[message.stream_id]:
                self.cursors[message.stream_id] = message.seq
                self.publish(message.stream_id, [(message.snippet_index, message.text)])
        return len(messages)


class ClusterStreams(LiveStreamManager):
    """The live API of a cluster replica: same methods as the single-node manager, state in the shared store."""

    def __init__(
        self,
        settings: ServiceSettings,
        db: Database,
        model: ModelService,
        metrics: ServiceMetrics,
        workers: LiveWorkers,
    ) -> None:
        log = MessageLog(db)
        super().__init__(settings, db, model, metrics)
        self.log = log
        self.hub = RelayHub(
            log, settings.live_client_queue, settings.live_replay, self.metrics.clients_dropped.inc
        )
        self.workers = workers
        # Scene operations go to the worker holding the camera's scene in memory.
        self.routed_scenes = (
            None
            if self.scenes is None
            else RoutedScenes(self.scenes.store, self.scenes.settings, self._scene_worker)
        )
        self.scenes = self.routed_scenes
        self.worker_states: list[str] = []  # as last read from Ray, by worker index
        self._unplaced_since: dict[int, float] = {}
        self._tasks: list[asyncio.Task] = []
        self.metrics_missed = Counter(
            "refinevad_cluster_worker_metrics_missed",
            "scrapes of GET /metrics a live worker's metrics were missing from (not up, or no answer in time)",
            ["worker"],
            registry=metrics.registry,
        )
        self.metrics_up = Gauge(
            "refinevad_cluster_worker_metrics_up",
            "1 when the live worker's metrics were in the last scrape of this replica, else 0",
            ["worker"],
            registry=metrics.registry,
        )
        metrics.merge_remote(
            self.worker_metrics,
            label="worker",
            families=PIPELINE_FAMILIES | MODEL_FAMILIES,
            replaced=PIPELINE_FAMILIES,
        )

    async def start(self) -> None:
        self.hub.bind(asyncio.get_running_loop())
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._watch())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.fail_over)
            except StorageError as exc:
                logger.warning("lost live workers cannot be checked now: %s", exc)
            except Exception:
                logger.exception("checking the live workers failed; continuing")
            await asyncio.sleep(_WATCH_INTERVAL_S)

    def _scene_worker(self, stream_id: str) -> Any | None:
        """The actor handle of the live worker the stream is assigned to, if it is up."""
        record = self.store.get(stream_id)
        if record is None or record.worker is None or record.worker not in self._reachable():
            return None
        return self.workers.handle(record.worker)

    def _scene_status(self, stream_id: str) -> SceneStatus | None:
        # A listing shows the saved state: a call per stream to the workers would make it slow.
        return None if self.routed_scenes is None else self.routed_scenes.stored_status(stream_id)

    def _serving(self) -> list[int]:
        return [index for index, state in enumerate(self.worker_states) if state == "ALIVE"]

    def _reachable(self) -> set[int]:
        """The workers worth calling: those Ray reports up, or all of them before the first state read."""
        return set(self._serving()) if self.worker_states else set(range(len(self.workers)))

    def fail_over(self) -> list[StreamRecord]:
        """Re-read the workers' states from Ray; move the streams of lost workers to serving ones (any replica
        may do this at any time: `StreamStore.reassign` lets one move them). Returns the streams moved here."""
        self.worker_states = self.workers.refresh()
        now = time.monotonic()
        for index, state in enumerate(self.worker_states):
            if state in _UNPLACED:
                self._unplaced_since.setdefault(index, now)
            else:
                self._unplaced_since.pop(index, None)
        lost = [
            index
            for index, state in enumerate(self.worker_states)
            if state in _LOST or now - self._unplaced_since.get(index, now) > _UNPLACED_GRACE_S
        ]
        serving = self._serving()
        # The cheap read first: a worker that stays down (no node free for it) costs no lock every time.
        if not lost or not serving or self.store.count_of_workers(lost) == 0:
            self._rebalance()
            return []
        moved = self.store.reassign(lost, serving)
        if moved:
            logger.warning(
                "live workers %s are %s in Ray: %d streams re-assigned (%s)",
                lost,
                [self.worker_states[index] for index in lost],
                len(moved),
                ", ".join(f"{record.id} -> worker {record.worker}" for record in moved),
            )
        for worker in sorted({record.worker for record in moved if record.worker is not None}):
            self._push(worker)
        return moved

    def _rebalance(self) -> None:
        """Spread the streams over the workers that are up with their model loaded (one joined, or is back)."""
        ready = self.workers.ready()
        if len(ready) < 2:
            return
        moves = rebalance(self.store.db, ready)
        if not moves:
            return
        logger.warning(
            "live workers %s rebalanced: %d streams moved (%s)",
            ready,
            len(moves),
            ", ".join(f"{m.stream_id}: worker {m.old} -> {m.new}" for m in moves),
        )
        # The old owners stop the streams first (closing what they had open), then the new ones start them.
        stopping = [h.sync.remote() for w in sorted({m.old for m in moves}) if (h := self.workers.handle(w))]
        if stopping:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.wait(stopping, num_returns=len(stopping), timeout=_HANDOFF_TIMEOUT_S)
        for worker in sorted({m.new for m in moves}):
            self._push(worker)

    async def _follow(self) -> None:
        while True:
            try:
                if self.hub.cursors:
                    await asyncio.to_thread(self.hub.follow_once)
            except StorageError as exc:
                logger.warning("live messages cannot be read now: %s", exc)
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("relaying live messages failed; continuing")
            await asyncio.sleep(_RELAY_INTERVAL_S)

    def _push(self, worker: int | None) -> None:
        """Tell the worker to re-read its streams now (it also does so periodically, should this be lost)."""
        handle = None if worker is None else self.workers.handle(worker)
        if handle is not None:
            handle.sync.remote()

    async def add(self, request: StreamCreate) -> StreamView:
        record = self._new_record(request, len(await asyncio.to_thread(self.store.all)))
        self.worker_states = await asyncio.to_thread(self.workers.refresh)
        # To a serving worker; while none is (the cluster is starting), to any placed one: it runs it once up.
        serving = (
            self._serving()
            or [index for index, state in enumerate(self.worker_states) if state not in _LOST]
            or list(range(len(self.workers)))
        )
        record = await asyncio.to_thread(self.store.add_to_least_loaded, record, serving)
        logger.info(
            "stream %s (%s) registered on live worker %s: %s",
            record.id,
            record.name,
            record.worker,
            mask_url(record.url),
        )
        self._push(record.worker)
        return await asyncio.to_thread(self._view_of, record, None)  # type: ignore[return-value]

    async def remove(self, stream_id: str) -> bool:
        record = await asyncio.to_thread(self.store.get, stream_id)
        if record is None or not await asyncio.to_thread(self.store.delete, stream_id):
            return False
        self._push(record.worker)
        self.hub.close_stream(stream_id)
        await asyncio.to_thread(self.log.delete_stream, stream_id)
        logger.info("stream %s (%s) removed", stream_id, record.name)
        return True

    def exists(self, stream_id: str) -> bool:
        return self.store.get(stream_id) is not None

    def _worker_views(self, workers: set[int]) -> dict[str, dict[str, Any]]:
        # A worker Ray knows is not up would only queue the call until it is.
        serving = self._reachable()
        handles = {w: self.workers.handle(w) for w in workers if w in serving}
        refs = {w: handle.views.remote() for w, handle in handles.items() if handle is not None}
        if not refs:
            return {}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=_VIEW_TIMEOUT_S)
        merged: dict[str, dict[str, Any]] = {}
        for ref in ready:
            with contextlib.suppress(ray.exceptions.RayError):
                merged.update(ray.get(ref))
        return merged

    def worker_metrics(self) -> dict[str, str]:
        """Each live worker's metrics (exposition text) by worker index, asked of all at once; a worker Ray does
        not report up, or that has not answered within `cluster_metrics_timeout_s`, is left out and counted in
        `refinevad_cluster_worker_metrics_missed`. Never raises (it runs inside a scrape)."""
        serving = self._reachable()
        refs = {}
        for index in serving:
            worker = self.workers.handle(index)
            if worker is not None:
                with contextlib.suppress(Exception):
                    refs[index] = worker.metrics_text.options(concurrency_group=READS_GROUP).remote()
        ready: set[Any] = set()
        if refs:
            try:
                done, _ = ray.wait(
                    list(refs.values()),
                    num_returns=len(refs),
                    timeout=self.settings.cluster_metrics_timeout_s,
                )
                ready = set(done)
            except Exception as exc:
                logger.warning("live workers' metrics unavailable: %s", exc)
        texts: dict[str, str] = {}
        for index in range(len(self.workers)):
            ref = refs.get(index)
            if ref is not None and ref in ready:
                with contextlib.suppress(Exception):
                    texts[str(index)] = ray.get(ref)
            elif ref is not None:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)  # still queued or running: not worth keeping
            answered = str(index) in texts
            self.metrics_up.labels(worker=str(index)).set(1 if answered else 0)
            if not answered:
                self.metrics_missed.labels(worker=str(index)).inc()
        return texts

    def latest_jpeg(self, stream_id: str) -> bytes | None:
        """The stream's newest frame, from the live worker that reads it; None when it has none yet, or it is not
        up or does not answer within `_VIEW_TIMEOUT_S`."""
        record = self.store.get(stream_id)
        if record is None or record.worker is None:
            return None
        worker = self.workers.handle(record.worker)
        if worker is None or record.worker not in self._reachable():
            return None  # the call would only queue until the worker is back
        ref = worker.latest_jpeg.options(concurrency_group=READS_GROUP).remote(stream_id)
        try:
            return ray.get(ref, timeout=_VIEW_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            logger.info("stream %s: no latest frame from live worker %d (%s)", stream_id, record.worker, exc)
            return None

    def _view_of(self, record: StreamRecord, running: dict[str, Any] | None) -> StreamView:
        if running is not None:
            return StreamView(**{**running, "clients": self.hub.subscriber_count(record.id)})
        base = self.view_of(record)
        base.note = f"starting on live worker {record.worker}"
        return base

    def view(self, stream_id: str) -> StreamView | None:
        record = self.store.get(stream_id)
        if record is None:
            return None
        running = self._worker_views({record.worker} if record.worker is not None else set())
        return self._view_of(record, running.get(stream_id))

    def views(self) -> list[StreamView]:
        records = self.store.all()
        running = self._worker_views({r.worker for r in records if r.worker is not None})
        return [self._view_of(record, running.get(record.id)) for record in records]
