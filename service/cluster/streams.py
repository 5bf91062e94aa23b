"""Live streams as an API replica of a cluster sees them: registrations in the shared store, run by the live
workers (Ray actors), their messages read back from the store and fanned out to this replica's WebSocket clients
by the same `LiveHub` a single node uses. Any replica serves any stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray

from service.cluster.messages import MessageLog
from service.live.hub import LiveHub
from service.live.manager import LiveStreamManager
from service.live.schemas import StreamCreate, StreamView
from service.live.store import StreamRecord
from service.live.urls import mask_url
from service.metrics import ServiceMetrics
from service.model_service import ModelService
from service.settings import ServiceSettings
from service.storage import Database, StorageError

logger = logging.getLogger(__name__)

_RELAY_INTERVAL_S = 0.1
_VIEW_TIMEOUT_S = 2.0


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
        workers: list[Any],
    ) -> None:
        log = MessageLog(db)
        super().__init__(settings, db, model, metrics)
        self.log = log
        self.hub = RelayHub(
            log, settings.live_client_queue, settings.live_replay, self.metrics.clients_dropped.inc
        )
        self.workers = workers
        self._relay: asyncio.Task | None = None

    async def start(self) -> None:
        self.hub.bind(asyncio.get_running_loop())
        self._relay = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay

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
        if worker is not None and 0 <= worker < len(self.workers):
            self.workers[worker].sync.remote()

    async def add(self, request: StreamCreate) -> StreamView:
        record = self._new_record(request, len(await asyncio.to_thread(self.store.all)))
        record = await asyncio.to_thread(self.store.add_to_least_loaded, record, len(self.workers))
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
        refs = {w: self.workers[w].views.remote() for w in workers if 0 <= w < len(self.workers)}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=_VIEW_TIMEOUT_S)
        merged: dict[str, dict[str, Any]] = {}
        for ref in ready:
            with contextlib.suppress(ray.exceptions.RayError):
                merged.update(ray.get(ref))
        return merged

    def _view_of(self, record: StreamRecord, running: dict[str, Any] | None) -> StreamView:
        base = self.view_of(record)
        if running is None:
            base.note = f"starting on live worker {record.worker}"
            return base
        return StreamView(**{**running, "clients": base.clients})

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
