"""A live worker: one Ray actor that runs its share of the streams with the single-node live pipeline
(`LiveStreamManager`: readers, the batching scheduler, events), on the GPU Ray gave it, and writes every message
to the shared store instead of to local WebSocket clients.

When a worker's process or node dies, the API replicas see it in Ray's actor state and re-assign its streams to
the surviving workers (`ClusterStreams.fail_over`), which take them up at their next `sync` (pushed to them at
once): snippet indices go on from the last stored one, live events (and clips) the lost worker left open are
marked interrupted (failed), never stored twice. Ray restarts a worker whose process died on its own node; one
whose node died is created again on the next free node (`placement`). Either comes up empty and gets streams back
as the replicas rebalance (or everything, when it was the only worker), rebuilt the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from typing import Any

from service.cluster.messages import MessageLog, StoredMessage
from service.cluster.scenes import OPERATIONS
from service.live.hub import LiveHub
from service.live.manager import LiveStreamManager
from service.live.store import StreamRecord
from service.metrics import ServiceMetrics
from service.model_service import ModelService
from service.settings import ServiceSettings
from service.storage import Database, StorageError

logger = logging.getLogger(__name__)

_WRITE_INTERVAL_S = 0.05
_PRUNE_INTERVAL_S = 30.0
_RETRY_S = 1.0


class RecordingHub(LiveHub):
    """Takes the scheduler's messages and writes them to the message log from a thread of its own, in order;
    the scheduler never waits for the database (a full queue drops the oldest message, counted). With `owner`,
    messages of streams no longer assigned to that live worker are not stored (`MessageLog.append`)."""

    def __init__(self, log: MessageLog, keep: int, capacity: int = 10_000, owner: int | None = None) -> None:
        super().__init__(client_queue=1, replay=0)
        self.log = log
        self.keep = keep
        self.owner = owner
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, list[tuple[int | None, str]]]] = queue.Queue(capacity)
        self._next_seq: dict[str, int] = {}
        self._disowned: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, name="message-writer", daemon=True)
        self._thread.start()

    def publish_threadsafe(self, stream_id: str, items: list[tuple[int | None, str]]) -> None:
        while True:
            try:
                self._queue.put_nowait((stream_id, items))
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self.dropped += 1

    def close_stream(self, stream_id: str) -> None:
        super().close_stream(stream_id)
        self._next_seq.pop(stream_id, None)
        self._disowned.discard(stream_id)

    def _write(self) -> None:
        last_prune = time.monotonic()
        while not self._stop.is_set():
            batch = []
            with contextlib.suppress(queue.Empty):
                batch.append(self._queue.get(timeout=_WRITE_INTERVAL_S))
                while len(batch) < 1000:
                    batch.append(self._queue.get_nowait())
            if batch:
                self._store(batch)
            if time.monotonic() - last_prune > _PRUNE_INTERVAL_S:
                last_prune = time.monotonic()
                for stream_id in list(self._next_seq):
                    with contextlib.suppress(StorageError):
                        self.log.prune(stream_id, self.keep)

    def _store(self, batch: list[tuple[str, list[tuple[int | None, str]]]]) -> None:
        while not self._stop.is_set():
            try:
                messages = []
                seqs = dict(self._next_seq)
                for stream_id, items in batch:
                    if stream_id not in seqs:
                        seqs[stream_id] = self.log.next_seq(stream_id)
                    for index, text in items:
                        messages.append(StoredMessage(stream_id, seqs[stream_id], index, text))
                        seqs[stream_id] += 1
                dropped = self.log.append(messages, time.time(), self.owner)
                for stream_id in dropped:
                    # Moved to another worker meanwhile: the numbering is the new owner's now.
                    seqs.pop(stream_id, None)
                    self._next_seq.pop(stream_id, None)
                    if stream_id not in self._disowned:
                        self._disowned.add(stream_id)
                        logger.warning(
                            "stream %s is assigned to another worker now: not storing its messages", stream_id
                        )
                self._next_seq.update(seqs)
                return
            except StorageError as exc:
                # Kept in order and retried: a passing database outage loses no message.
                logger.warning("live messages not stored (%s); retrying in %gs", exc, _RETRY_S)
                self._stop.wait(_RETRY_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class LiveWorker:
    """The actor: `index` is the share of the streams it runs (`streams.worker`)."""

    def __init__(self, settings: ServiceSettings, index: int) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.index = index
        self.settings = settings
        self.db = Database(settings.database_target, busy_timeout_s=settings.db_busy_timeout_s)
        self.log = MessageLog(self.db)
        # One registry for the model and the pipeline: what `metrics` hands the API replicas.
        self.metrics = ServiceMetrics()
        self.model = ModelService(settings, self.metrics)
        self.hub = RecordingHub(self.log, keep=settings.live_replay, owner=index)
        self.manager = LiveStreamManager(
            settings,
            self.db,
            self.model,
            self.metrics,
            hub=self.hub,
            owned=self._owned,
            first_snippet=self.log.next_snippet,
            # Clips are encoded here before they go to the store: a directory per worker, so a restarted worker
            # clears only its own leftovers, not those of another worker on the same machine.
            media_root=settings.media_dir / f"worker-{index}",
        )
        self.started_at = time.time()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-worker-loop", daemon=True)
        self._thread.start()
        self.model.start()
        self._call(self.manager.start())
        self._sync_task = asyncio.run_coroutine_threadsafe(self._sync_forever(), self._loop)
        logger.info("live worker %d started on this node", index)

    def _owned(self) -> list[StreamRecord]:
        """The streams the store assigns to this worker. One it stopped before (moved away, now back) is
        readmitted first: the dispatcher drops what removed streams publish."""
        records = self.manager.store.of_worker(self.index)
        for record in records:
            if not self.manager.exists(record.id):
                self.manager.dispatcher.readmit(record.id)
        return records

    def _call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _sync_forever(self) -> None:
        # Registrations are also pushed (`sync`); this catches any push that was lost.
        while True:
            await asyncio.sleep(self.settings.cluster_sync_s)
            try:
                await self._sync()
            except Exception:
                logger.exception("live worker %d: re-reading its streams failed", self.index)

    async def _sync(self) -> tuple[list[str], list[str]]:
        started, stopped = await asyncio.to_thread(self.manager.sync)
        for stream_id in stopped:
            # Removed through an API replica: what was written after it deleted the messages goes too. A stream
            # that moved to another worker (rebalanced) keeps them: they are its history there.
            if await asyncio.to_thread(self.manager.store.get, stream_id) is None:
                await asyncio.to_thread(self.log.delete_stream, stream_id)
        return started, stopped

    # -- called through Ray --------------------------------------------------------------------------------
    def sync(self) -> tuple[list[str], list[str]]:
        """Start and stop streams to match the store now (after a registration or removal)."""
        return self._call(self._sync())

    def ready(self) -> bool:
        """Whether the model is loaded here (streams moved here start scoring at once). A read: called in the
        `reads` concurrency group."""
        return self.model.ready

    def views(self) -> dict[str, dict[str, Any]]:
        """Each running stream's view (`StreamView` as JSON), by id."""
        return {v.id: v.model_dump(mode="json") for v in self.manager.views()}

    def metrics_text(self) -> str:
        """This worker's Prometheus metrics (text format 0.0.4): its live pipeline and its model. Called by the
        API replicas' GET /metrics in the actor's `reads` concurrency group, so it never waits behind `sync`."""
        return self.metrics.render().decode()

    def latest_jpeg(self, stream_id: str) -> bytes | None:
        """JPEG of the stream's newest frame here, or None (no frame yet, or event media off)."""
        return self.manager.latest_jpeg(stream_id)

    def scene(self, operation: str, stream_id: str, *args: Any) -> Any:
        """A `SceneRegistry` operation (`service.cluster.scenes.OPERATIONS`) on the scene model this worker holds
        for the stream; "snapshot" answers the model's bytes. Called by API replicas in the `scenes` group."""
        scenes = self.manager.scenes
        if scenes is None or operation not in OPERATIONS:
            raise ValueError(f"no scene operation {operation!r} here")
        try:
            if operation == "snapshot":
                return scenes.snapshot(stream_id).to_bytes()
            return getattr(scenes, operation)(stream_id, *args)
        finally:
            if not self.manager.exists(stream_id):
                # Not (or no longer) run here: saved and dropped, so a later return of the stream loads the
                # newest copy instead of this one.
                scenes.release(stream_id)

    def info(self) -> dict[str, Any]:
        import os

        import ray

        return {
            "index": self.index,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "streams": sorted(view.id for view in self.manager.views()),
            "model": self.model.state,
            "dropped_messages": self.hub.dropped,
        }
