"""The live-stream component of the service: registry, readers, scheduler, events, and the dispatcher with its
publishers (WebSocket hub, webhook, MQTT, event media) together.

Started and stopped by the app's lifespan. Registered streams are persisted and resumed at start-up; readers start
once the model is loaded (its snippet geometry decides how frames are cut), and meanwhile show as `connecting`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from model.events import EventPolicy
from model.scene import SceneStatus
from model.video.pyav_camera import parse_ffmpeg_options
from model.video.snippets import SnippetSpec
from service.event_media.recorder import EventMedia, MediaPolicy
from service.event_media.store import MediaStore
from service.live import log_masking
from service.live.events import LiveEventStore
from service.live.hub import LiveHub
from service.live.metrics import LiveMetrics
from service.live.readers import Backoff, StreamReader, open_camera
from service.live.scheduler import LiveScheduler, LiveStream
from service.live.schemas import EventPolicyOverrides, EventPolicyView, StreamCreate, StreamView
from service.live.store import StreamRecord, StreamStore
from service.live.urls import check_source_url, mask_url
from service.metrics import ServiceMetrics
from service.model_service import ModelService
from service.publishers.base import StreamRemoved
from service.publishers.dispatcher import Dispatcher
from service.publishers.mqtt import MqttPublisher
from service.publishers.webhook import WebhookPublisher
from service.publishers.websocket import WebSocketPublisher
from service.scene.registry import SceneRegistry, scene_settings
from service.scene.store import SceneStore
from service.settings import ServiceSettings
from service.storage import Database

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

logger = logging.getLogger(__name__)

# Live defaults against alert fatigue: an event closes only after 2 snippets (at 10 fps) below the exit
# threshold, and the next one may not open within 5 s of its end. Streams can override each.
DEFAULT_MIN_GAP_S = 3.2
DEFAULT_COOLDOWN_S = 5.0


class StreamLimitReached(RuntimeError):
    pass


class InvalidStreamOptions(ValueError):
    pass


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class LiveStreamManager:
    def __init__(
        self,
        settings: ServiceSettings,
        db: Database,
        model: ModelService,
        metrics: ServiceMetrics,
        *,
        hub: LiveHub | None = None,
        owned: Callable[[], list[StreamRecord]] | None = None,
        first_snippet: Callable[[str], int] | None = None,
        media_root: Path | None = None,
    ) -> None:
        """`owned` lists the streams this manager runs (default: every registered stream; a cluster's live
        worker runs its share), `first_snippet` the index a resumed stream's snippets start at (default 0),
        `hub` takes the scored messages (default: a `LiveHub` for this process's WebSocket clients), and
        `media_root` is where event media files go (default `DATA_DIR/media`; a cluster's live worker encodes its
        clips in a directory of its own there, and stores the media in the shared database)."""
        self.settings = settings
        if settings.live_ffmpeg_options and FFMPEG_OPTIONS_ENV not in os.environ:
            # OpenCV reads its FFmpeg options from here; cameras are its only captures in the service, so this
            # shortens only their stream probing: about 2.8 s -> 0.6 s per (re)connect to an RTSP camera.
            os.environ[FFMPEG_OPTIONS_ENV] = settings.live_ffmpeg_options
        # PyAV cameras get the same FFmpeg options as OpenCV's captures would.
        self._camera_options = parse_ffmpeg_options(
            os.environ.get(FFMPEG_OPTIONS_ENV, settings.live_ffmpeg_options)
        )
        self.model = model
        self.store = StreamStore(db)
        self.event_store = LiveEventStore(db)
        self.metrics = LiveMetrics(metrics)
        self.hub = hub or LiveHub(
            settings.live_client_queue, settings.live_replay, self.metrics.clients_dropped.inc
        )
        self._owned = owned
        self._first_snippet = first_snippet or (lambda _stream_id: 0)
        # Every output of the pipeline is a publisher owned by the dispatcher: a new sink is added here only.
        self.dispatcher = Dispatcher(on_error=lambda name: self.metrics.publisher_errors.labels(name).inc())
        self.dispatcher.add(WebSocketPublisher(self.hub))
        self.media: EventMedia | None = None
        if settings.media_enabled:
            self.media = EventMedia(
                # In a cluster every replica serves every event's media: they are kept in the shared database.
                MediaStore(db, media_root or settings.media_dir, shared=bool(settings.cluster_address)),
                media_policy(settings),
                # A cluster worker fails only its own streams' unfinished clips, not those other workers record.
                recover_streams=None if owned is None else lambda: [record.id for record in owned()],
            )
            self.dispatcher.add(self.media)
        if settings.live_webhook_url is not None:
            self.dispatcher.add(
                WebhookPublisher(
                    settings.live_webhook_url.get_secret_value(), attempts=settings.live_webhook_attempts
                )
            )
        if settings.mqtt_url is not None:
            self.dispatcher.add(
                MqttPublisher(
                    settings.mqtt_url.get_secret_value(),
                    prefix=settings.mqtt_topic_prefix,
                    client_id=settings.mqtt_client_id,
                    score_interval_s=settings.mqtt_score_interval_s,
                    public_url=settings.public_url,
                    tls_ca=settings.mqtt_tls_ca,
                )
            )
        # Each camera's own normal (model.scene), in the database so it survives restarts and moves.
        self.scenes: SceneRegistry | None = None
        if settings.scene_models:
            self.scenes = SceneRegistry(
                SceneStore(db), scene_settings(settings.scene_learn_s, settings.scene_max_mb)
            )
        self.scheduler = LiveScheduler(
            model,
            self.dispatcher,
            self.event_store,
            self.metrics,
            settings.live_window,
            self.scenes,
            store_handover=owned is not None,
        )
        self._records: dict[str, StreamRecord] = {}
        self._adding = 0  # registrations being stored (counted against the stream limit)
        self._spec: SnippetSpec | None = None
        self._resume_task: asyncio.Task | None = None
        # `sync` runs from pushes, a periodic re-read and the start-up: one at a time, or a stream could start twice.
        self._sync_lock = threading.Lock()
        # Open events taken over from the streams' previous worker, until their streams launch here.
        self._handovers: dict[str, dict[str, Any]] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        log_masking.install()
        self.hub.bind(asyncio.get_running_loop())
        records = self._owned() if self._owned is not None else self.store.all()
        if self._owned is None:
            interrupted = self.event_store.mark_interrupted()
            if interrupted:
                logger.warning(
                    "%d live events were open when the service last stopped; marked interrupted", interrupted
                )
        else:
            # A cluster worker (re)starting takes its streams over from whichever worker ran them.
            self._take_over_events([record.id for record in records])
        self.dispatcher.start()
        self.scheduler.start()
        for record in records:
            self._records[record.id] = record
            self.hub.open_channel(record.id)
        if self._records:
            logger.info("resuming %d registered streams once the model is loaded", len(self._records))
        self._resume_task = asyncio.create_task(self._launch_when_ready())

    async def _launch_when_ready(self) -> None:
        loaded = await asyncio.to_thread(self.model.wait_until_loaded)
        if not loaded:
            logger.error("live streams are not started: the model failed to load")
            return
        self._spec = self.model.engine().spec
        if self._owned is not None:
            # The share is re-read as they start: while the model loaded, streams may have moved elsewhere.
            await asyncio.to_thread(self.sync)
            return
        for record in list(self._records.values()):
            self._launch(record)

    async def stop(self) -> None:
        if self._resume_task is not None:
            self._resume_task.cancel()
        streams = self.scheduler.streams()
        for stream in streams:
            stream.reader.stop()
        await asyncio.to_thread(self.scheduler.stop)
        await asyncio.to_thread(self.dispatcher.stop)

    # -- registry ------------------------------------------------------------------------------------------
    def _policy(self, overrides: EventPolicyOverrides) -> EventPolicy:
        enter = self.settings.event_threshold
        defaults = {
            "enter_threshold": enter,
            "exit_threshold": max(0.0, enter - 0.1),
            "min_duration_s": 0.0,
            "min_gap_s": DEFAULT_MIN_GAP_S,
            "cooldown_s": DEFAULT_COOLDOWN_S,
        }
        given = overrides.model_dump(exclude_none=True)
        if "enter_threshold" in given and "exit_threshold" not in given:
            defaults["exit_threshold"] = max(0.0, given["enter_threshold"] - 0.1)
        try:
            return EventPolicy(**{**defaults, **given})
        except ValidationError as exc:
            raise InvalidStreamOptions(
                "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
            ) from None

    def _new_record(self, request: StreamCreate, registered: int) -> StreamRecord:
        """A new stream's registration, checked (limit, URL, event options) before anything is stored; raises
        StreamLimitReached, InvalidSourceUrl or InvalidStreamOptions."""
        if registered >= self.settings.live_max_streams:
            raise StreamLimitReached(
                f"{registered} streams are registered, the limit is {self.settings.live_max_streams} "
                "(REFINEVAD_LIVE_MAX_STREAMS)"
            )
        url = check_source_url(request.url, self.settings.allowed_schemes, self.settings.allowed_hosts)
        self._policy(request.events)
        return StreamRecord(
            id=uuid.uuid4().hex[:16],
            name=request.name,
            url=url,
            events=request.events,
            loop=request.loop,
            created_at=time.time(),
        )

    async def add(self, request: StreamCreate) -> StreamView:
        """Register and start a stream; raises InvalidSourceUrl, InvalidStreamOptions, StreamLimitReached, or a
        StorageError when the registration cannot be stored (nothing is registered then)."""
        record = self._new_record(request, len(self._records) + self._adding)
        url = record.url
        # Off the event loop: the write may wait for a database locked by another process.
        self._adding += 1
        try:
            await asyncio.to_thread(self.store.add, record)
        finally:
            self._adding -= 1
        self._records[record.id] = record
        self.hub.open_channel(record.id)
        logger.info("stream %s (%s) registered: %s", record.id, record.name, mask_url(url))
        if self._spec is not None:
            self._launch(record)
        return self.view(record.id)  # type: ignore[return-value]

    def _launch(self, record: StreamRecord) -> None:
        assert self._spec is not None
        if any(s.id == record.id for s in self.scheduler.streams()) or record.id not in self._records:
            return
        s = self.settings
        reader = StreamReader(
            record.id,
            record.url,
            self._spec,
            wake=self.scheduler.wake,
            backoff=Backoff(s.live_reconnect_initial_s, s.live_reconnect_max_s),
            open_timeout_s=s.live_open_timeout_s,
            read_timeout_s=s.live_read_timeout_s,
            probe_interval_s=s.live_probe_interval_s,
            probe_timeout_s=s.live_probe_timeout_s,
            stall_after_s=s.live_stall_after_s,
            opener=partial(
                open_camera,
                decoder=s.live_decoder,
                ffmpeg_options=self._camera_options,
                open_concurrency=s.live_open_concurrency,
            ),
            loop_files=record.loop,
            first_snippet=self._first_snippet(record.id),
            on_frames=self.media.frame_sink(record.id) if self.media is not None else None,
        )
        stream = LiveStream(
            record.id,
            record.name,
            reader,
            self._policy(record.events),
            record.created_at,
            handover=self._handovers.pop(record.id, None),
        )
        self.scheduler.add(stream)
        reader.start()

    async def remove(self, stream_id: str) -> bool:
        if stream_id not in self._records:
            return False
        # Forgotten in the database first: if that write fails the stream stays registered and running.
        await asyncio.to_thread(self.store.delete, stream_id)
        record = self._records.pop(stream_id, None)
        if record is None:
            return False  # removed by a concurrent request meanwhile
        self._stop_stream(stream_id)
        if self.scenes is not None:
            await asyncio.to_thread(self.scenes.forget, stream_id)
        logger.info("stream %s (%s) removed", stream_id, record.name)
        return True

    def _stop_stream(self, stream_id: str, moved: bool = False) -> None:
        stream = self.scheduler.remove(stream_id, moved=moved)
        if stream is not None:
            stream.reader.stop()
        self.dispatcher.publish(StreamRemoved(stream_id))

    def sync(self) -> tuple[list[str], list[str]]:
        """Run exactly the `owned` streams now stored (a cluster's registrations change in the shared store):
        start the new ones, stop the ones gone. Returns the ids started and stopped."""
        if self._owned is None:
            return [], []
        with self._sync_lock:
            return self._sync_owned()

    def _sync_owned(self) -> tuple[list[str], list[str]]:
        assert self._owned is not None
        wanted = {record.id: record for record in self._owned()}
        started = [sid for sid in wanted if sid not in self._records]
        stopped = [sid for sid in self._records if sid not in wanted]
        for stream_id in stopped:
            self._records.pop(stream_id, None)
            # Not launched here after all: the worker it goes to takes its open event over itself.
            self._handovers.pop(stream_id, None)
            # Still registered: moved to another worker, which continues its open event (`take_over`).
            moved = self.store.get(stream_id) is not None
            self._stop_stream(stream_id, moved=moved)
            if self.scenes is not None:
                if moved:
                    self.scenes.release(stream_id)  # saved for whichever worker runs it next
                else:
                    self.scenes.forget(stream_id)  # removed (through any replica), as `remove` does here
        if started:
            self._adopt(started)
        for stream_id in started:
            self._records[stream_id] = wanted[stream_id]
            self.hub.open_channel(stream_id)
        if self._spec is not None:
            for record in self._records.values():
                self._launch(record)  # those not running yet
        if started or stopped:
            logger.info("live streams: started %s, stopped %s", started, stopped)
        return started, stopped

    def _adopt(self, stream_ids: list[str]) -> None:
        """Streams this manager starts running while the service runs (new, or moved here from another cluster
        worker): their recent open events are continued here, older ones marked interrupted, and clips left
        recording marked failed."""
        self._take_over_events(stream_ids)
        if self.media is not None:
            failed = self.media.store.fail_recording(stream_ids)
            if failed:
                logger.warning(
                    "%d event clips left recording by the streams' previous worker: marked failed", failed
                )

    def _take_over_events(self, stream_ids: list[str]) -> None:
        """Open events the streams' previous worker left: recent ones are continued here (`LiveEventStore.
        take_over`), the others marked interrupted."""
        continued, interrupted = self.event_store.take_over(stream_ids)
        self._handovers.update(continued)
        if continued:
            logger.info("continuing %d open live events from the streams' previous worker", len(continued))
        if interrupted:
            logger.warning(
                "%d live events left open by the streams' previous worker: marked interrupted", interrupted
            )

    def latest_jpeg(self, stream_id: str) -> bytes | None:
        """JPEG of the stream's newest frame, or None when none was read yet (or event media are off)."""
        return None if self.media is None else self.media.latest_jpeg(stream_id)

    def exists(self, stream_id: str) -> bool:
        return stream_id in self._records

    # -- views ---------------------------------------------------------------------------------------------
    def view(self, stream_id: str) -> StreamView | None:
        record = self._records.get(stream_id)
        return None if record is None else self.view_of(record)

    def _scene_status(self, stream_id: str) -> SceneStatus | None:
        """The stream's scene status for its view (None: scene models off)."""
        return None if self.scenes is None else self.scenes.status(stream_id)

    def view_of(self, record: StreamRecord) -> StreamView:
        """A registered stream's view: its reader's and scheduler's figures here, or `connecting`."""
        stream_id = record.id
        running = {s.id: s for s in self.scheduler.streams()}.get(stream_id)
        policy = self._policy(record.events)
        base = {
            "id": record.id,
            "name": record.name,
            "url": mask_url(record.url),
            "created_at": _time(record.created_at),
            "clients": self.hub.subscriber_count(stream_id),
            "events": EventPolicyView(**policy.model_dump()),
        }
        if (scene := self._scene_status(stream_id)) is not None:
            base |= {"scene_state": scene.state, "scene_progress": round(scene.progress, 3)}
        if running is None:
            return StreamView(
                **base,
                state="connecting",
                note="waiting for the model to load" if self._spec is None else None,
                fps_in=0.0,
                fps_processed=0.0,
                frames_in=0,
                snippets_processed=0,
                dropped_frames=0,
                connect_attempts=0,
                reconnects=0,
            )
        st = running.reader.stats
        state, last_error = running.reader.status()
        return StreamView(
            **base,
            state=state,
            last_error=last_error,
            note=st.note,
            connected_since=_time(st.connected_since),
            width=st.width,
            height=st.height,
            source_fps=st.source_fps,
            fps_in=round(st.rate_in.rate(), 2),
            fps_processed=round(running.rate_processed.rate(), 2),
            frames_in=st.frames_in,
            snippets_processed=running.snippets_processed,
            dropped_frames=st.dropped_frames,
            decode_errors=st.decode_errors,
            connect_attempts=st.connect_attempts,
            reconnects=st.reconnects,
            last_score=running.last_score,
            last_latency_s=None if running.last_latency_s is None else round(running.last_latency_s, 4),
            scene=running.last_scene,
        )

    def views(self) -> list[StreamView]:
        return [v for sid in list(self._records) if (v := self.view(sid)) is not None]


def media_policy(settings: ServiceSettings) -> MediaPolicy:
    mb = 1024 * 1024
    return MediaPolicy(
        ring_bytes=int(settings.media_ring_mb * mb),
        max_fps=settings.media_fps,
        max_width=settings.media_max_width,
        pre_roll_s=settings.media_pre_roll_s,
        post_roll_s=settings.media_post_roll_s,
        max_clip_s=settings.media_max_clip_s,
        retain_s=settings.media_retain_days * 86400.0,
        max_total_bytes=int(settings.media_max_total_mb * mb),
        retention_interval_s=settings.media_retention_interval_s,
    )
