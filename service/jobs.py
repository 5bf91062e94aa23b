"""The analysis job queue: worker threads take job ids from a priority queue and run the engine on the spooled upload.

The database is the source of truth; the in-memory queue only orders work. A job is claimed with an atomic
`queued -> running` update, so a deleted or cancelled job is never run. Analysis runs in plain threads (torch and
OpenCV release the GIL), leaving the event loop free; requests that wait for a result await an asyncio future that
the worker resolves through `call_soon_threadsafe`.

Every claim is a lease: the job row names its owner (this process) and an expiry on the database's clock, which a
thread here renews while the job runs. Every write of an outcome is fenced by the owner, so a process that lost its
lease (the job was deleted, or taken over) stores nothing, and a result is never stored twice.

Single node: at start-up, jobs found `running` were interrupted by a crash of this same service: each is re-queued
if its upload is still on disk and it has attempts left, otherwise failed with the reason. A graceful shutdown
re-queues the running job without counting the attempt.

Cluster (`shared_poll_s`): several API replicas share the store. Each one's workers also claim, every
`shared_poll_s`, the oldest job that is queued or whose lease expired (its replica died), with `FOR UPDATE SKIP
LOCKED`, so exactly one replica takes each; the upload is read from the store (`job_uploads`) when it is not in
this replica's spool. A client waiting on a job here sees it finish wherever it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from model.inference import AnalysisCancelled, AnalysisResult
from model.scene import SceneModel
from model.video.source import VideoDecodeError
from service.event_media.file_snapshots import event_snapshots
from service.metrics import ServiceMetrics
from service.model_service import ModelService
from service.scene.registry import SceneRegistry
from service.storage import DEFAULT_LEASE_S, EventRecord, JobRecord, JobStore, StorageError

logger = logging.getLogger(__name__)

T = TypeVar("T")

PRIORITY_WAITING = 0  # a client holds a connection open for this one
PRIORITY_BACKGROUND = 1
_PROGRESS_WRITE_INTERVAL_S = 0.5
_STORAGE_RETRY_S = 1.0
_STOP = (-1, -1, "")


class Analyzer(Protocol):
    def __call__(
        self,
        path: Path,
        *,
        job_id: str,
        progress: Callable[[float], None],
        frame_scores: bool,
        should_stop: Callable[[], bool],
        camera: str | None = None,
        scene: SceneModel | None = None,
    ) -> AnalysisResult: ...


@dataclass
class _Running:
    job_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    last_write: float = 0.0
    # Set when a renewal found the lease gone: the job was deleted or another replica took it over.
    lost: bool = False


def owner_id() -> str:
    """This process as a job owner: host and PID (what an operator looks for) plus a random suffix, so a restarted
    process with a reused PID never passes for its predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobManager:
    def __init__(
        self,
        store: JobStore,
        model: ModelService,
        metrics: ServiceMetrics,
        *,
        workers: int = 1,
        max_attempts: int = 2,
        analyzer: Analyzer | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        shared_poll_s: float | None = None,
        spool: Path | None = None,
    ) -> None:
        """`analyzer` runs one job's analysis (default: this process's engine; a cluster passes one that runs it
        as a Ray task on another machine). `lease_s`: how long a claim holds without renewal (renewed every
        third of it). `shared_poll_s` (cluster mode): also claim queued and expired jobs from the shared store
        this often, in seconds. `spool`: this process's upload folder (only its files are ever deleted here;
        uploads of jobs taken over are fetched into it)."""
        self.store = store
        self.analyzer = analyzer or self._analyze_here
        # The cameras' scene models, for `?camera=` (set by the app once live streams exist).
        self.scenes: SceneRegistry | None = None
        self.model = model
        self.metrics = metrics
        self.workers = workers
        self.max_attempts = max_attempts
        self.owner = owner_id()
        self.lease_s = lease_s
        self.shared_poll_s = shared_poll_s
        self.spool = spool
        self._queue: queue.PriorityQueue[tuple[int, int, str]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._shutdown = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, _Running] = {}
        self._waiters: dict[
            str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[JobRecord | None]]]
        ] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- lifecycle

    def recover(self) -> None:
        """Re-queue or fail what a previous run of this single-node service left unfinished (call before
        `start`). A cluster recovers nothing here: replicas share the store, and a dead replica's jobs are taken
        over by the claim loops once their leases expire."""
        if self.shared_poll_s is not None:
            logger.info("jobs are leased to this replica as %s for %gs at a time", self.owner, self.lease_s)
            return
        for job_id in self.store.ids_with_status("running"):
            job = self.store.get(job_id)
            if job is None:
                continue
            upload = Path(job.upload_path) if job.upload_path else None
            if upload is None or not upload.is_file():
                reason = "interrupted by a server crash or restart, and its upload is no longer on disk"
                self.store.finish(job_id, "failed", error=reason, error_code="interrupted")
                logger.warning("job %s failed: %s", job_id, reason)
            elif job.attempts >= self.max_attempts:
                reason = (
                    f"interrupted by a server crash or restart {job.attempts} times "
                    f"(limit {self.max_attempts}); not retried again"
                )
                self.store.finish(job_id, "failed", error=reason, error_code="interrupted")
                self._remove_upload(job.upload_path)
                logger.warning("job %s failed: %s", job_id, reason)
            else:
                self.store.requeue(
                    job_id, note=f"resumed after an interrupted attempt ({job.attempts} so far)"
                )
                logger.warning("job %s was interrupted by a crash or restart; re-queued", job_id)
        for job_id in self.store.ids_with_status("queued"):
            self.enqueue(job_id, PRIORITY_BACKGROUND)

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"job-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._renewer = threading.Thread(target=self._renew_leases, name="job-leases", daemon=True)
        self._renewer.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._shutdown.set()
        with self._lock:
            for running in self._running.values():
                running.cancel.set()
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in [*self._threads, *([self._renewer] if self._renewer else [])]:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("%s did not stop within %.0fs", thread.name, timeout)

    # ------------------------------------------------------------------------------------------ public API

    def enqueue(self, job_id: str, priority: int = PRIORITY_BACKGROUND) -> None:
        self._queue.put((priority, next(self._seq), job_id))
        self.metrics.queue_depth.labels(queue="jobs").set(self.queue_depth)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def progress(self, job_id: str) -> float | None:
        running = self._running.get(job_id)
        return None if running is None else running.progress

    def cancel(self, job_id: str) -> bool:
        """Ask a running job to stop; True if it was running here."""
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                return False
            running.cancel.set()
            return True

    async def wait(self, job_id: str) -> JobRecord | None:
        """Until the job is final (or deleted: None)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[JobRecord | None] = loop.create_future()
        with self._lock:
            self._waiters.setdefault(job_id, []).append((loop, future))
        # The job may have finished before the waiter was registered.
        job = self.store.get(job_id)
        if job is None or job.terminal:
            self._notify(job_id, job)
        if self.shared_poll_s is None:
            return await future
        # Cluster: another replica may run the job; its outcome shows in the shared store.
        while True:
            done, _ = await asyncio.wait({future}, timeout=self.shared_poll_s)
            if done:
                return future.result()
            try:
                job = await asyncio.to_thread(self.store.get, job_id)
            except StorageError as exc:
                logger.debug("job %s: not read while waiting: %s", job_id, exc)
                continue
            if job is None or job.terminal:
                self._notify(job_id, job)

    # ------------------------------------------------------------------------------------------ the worker

    def _durably(self, what: str, write: Callable[[], T]) -> T | None:
        """Run a database write, retrying while the database refuses it for now (locked elsewhere, disk full):
        a finished job's result must not be lost to a passing storage fault. None if the service stopped first;
        the job then stays as the database has it and is recovered at the next start."""
        while True:
            try:
                return write()
            except StorageError as exc:
                logger.warning("%s: %s; retrying in %gs", what, exc, _STORAGE_RETRY_S)
                if self._shutdown.wait(_STORAGE_RETRY_S):
                    return None

    def _fail(self, job_id: str, error: str, error_code: str) -> None:
        # Read before `finish`, which clears the upload path: a failed job is never retried, so its spooled
        # upload must go with it.
        job = self._durably(f"job {job_id}: reading it", lambda: self.store.get(job_id))
        finished = self._durably(
            f"job {job_id}: storing its failure",
            lambda: self.store.finish(job_id, "failed", error=error, error_code=error_code, owner=self.owner),
        )
        if finished:
            if job is not None:
                self._remove_upload(job.upload_path)
            self._after_terminal(job_id, "failed", 0.0)

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.shared_poll_s)
            except queue.Empty:
                item = None  # cluster: nothing queued here; look in the shared store
            self.metrics.queue_depth.labels(queue="jobs").set(self.queue_depth)
            if item == _STOP or self._shutdown.is_set():
                return
            if item is None:
                job = self._claim_shared()
            elif not self.model.wait_until_loaded():
                self._fail(item[2], f"the model failed to load: {self.model.error}", "model_failed")
                continue
            else:
                job_id = item[2]
                job = self._durably(
                    f"job {job_id}: claiming it",
                    lambda job_id=job_id: self.store.mark_running(job_id, self.owner, self.lease_s),
                )
            if job is None:
                continue  # deleted, cancelled or taken elsewhere (or nothing to take, or stopping)
            try:
                self._run(job)
            except Exception:
                # A bug here must not kill the worker thread; the job is failed with the reason.
                logger.exception("job %s: unexpected error in the worker", job.id)
                self._fail(job.id, "internal error in the job worker (logged)", "internal_error")

    def _claim_shared(self) -> JobRecord | None:
        """The oldest job queued by any replica, or one whose lease expired; None when there is none, the model
        is not ready here (another replica will take it), or the store cannot be reached now."""
        if not self.model.ready:
            return None
        try:
            return self.store.claim_next(self.owner, self.lease_s, max_attempts=self.max_attempts)
        except StorageError as exc:
            logger.warning("looking for jobs in the shared store: %s", exc)
            return None

    def _renew_leases(self) -> None:
        """Every third of the lease: extend the leases of the jobs running here; a job whose lease is gone (deleted,
        or taken over after this process stalled past its lease) is stopped, and nothing of it is stored."""
        while not self._shutdown.wait(self.lease_s / 3):
            with self._lock:
                running = dict(self._running)
            if not running:
                continue
            try:
                held = self.store.renew(list(running), self.owner, self.lease_s)
            except StorageError as exc:
                logger.warning("job leases not renewed: %s", exc)
                continue
            for job_id in running.keys() - held:
                logger.warning("job %s: its lease is gone (deleted or taken over); stopping it here", job_id)
                running[job_id].lost = True
                running[job_id].cancel.set()

    def _run(self, job: JobRecord) -> None:
        job_id = job.id
        running = _Running(job_id)
        with self._lock:
            self._running[job_id] = running  # leased from here on, fetching the upload included
        upload = self._upload_here(job)
        if upload is None:
            with self._lock:
                self._running.pop(job_id, None)
            if not self._shutdown.is_set():  # stopping: the lease expires and another replica takes it over
                self._fail(job_id, "its upload is no longer available to any replica", "interrupted")
            return
        self.metrics.jobs_running.inc()
        started = time.perf_counter()
        status, error, error_code, result = "failed", None, "analysis_failed", None
        try:
            # A copy of the camera's scene model: the live scheduler keeps adapting it meanwhile.
            scene = None if not job.camera or self.scenes is None else self.scenes.snapshot(job.camera)
            result = self.analyzer(
                upload,
                job_id=job_id,
                progress=lambda fraction: self._on_progress(running, fraction),
                frame_scores=job.frame_scores,
                should_stop=running.cancel.is_set,
                camera=job.camera,
                scene=scene,
            )
        except AnalysisCancelled:
            pass  # the cancel flag says why
        except VideoDecodeError as exc:
            error, error_code = f"the video could not be decoded: {exc}", "undecodable_video"
        except Exception as exc:
            logger.exception("job %s: analysis failed", job_id)
            error = f"analysis failed: {type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._running.pop(job_id, None)
            self.metrics.jobs_running.dec()
        elapsed = time.perf_counter() - started

        if running.lost:
            # Nothing to store: the job is gone, or its new owner stores its outcome.
            self._remove_upload(upload)
            return
        if running.cancel.is_set():
            if self._shutdown.is_set():
                self._durably(
                    f"job {job_id}: re-queueing it",
                    lambda: self.store.requeue(
                        job_id,
                        note="interrupted by a server shutdown; resumed",
                        refund_attempt=True,
                        owner=self.owner,
                    ),
                )
                logger.info("job %s re-queued (shutdown)", job_id)
                return
            status = "cancelled"
            finished = self._durably(
                f"job {job_id}: storing its cancellation",
                lambda: self.store.finish(
                    job_id, status, error="cancelled by request", error_code="cancelled", owner=self.owner
                ),
            )
        elif result is not None:
            status = "succeeded"
            result_json, events = result.model_dump_json(), _events_of(job_id, result)
            snapshots_json = self._snapshots(job, result, upload)
            finished = self._durably(
                f"job {job_id}: storing its result",
                lambda: self.store.finish(
                    job_id,
                    status,
                    result_json=result_json,
                    events=events,
                    snapshots_json=snapshots_json,
                    owner=self.owner,
                ),
            )
            self._count_work(result)
        else:
            finished = self._durably(
                f"job {job_id}: storing its failure",
                lambda: self.store.finish(
                    job_id, "failed", error=error, error_code=error_code, owner=self.owner
                ),
            )
        if finished is None:
            return  # stopping with the write not done: the job is recovered at the next start
        # Before waiters are woken: a synchronous answer leaves nothing of the upload behind.
        self._remove_upload(upload)
        if finished:
            self._after_terminal(job_id, status, elapsed)

    def _upload_here(self, job: JobRecord) -> Path | None:
        """The job's video on this machine: its spooled upload, or (cluster mode, a job accepted by another
        replica) a copy fetched from the shared store into this spool; None if neither exists."""
        spooled = Path(job.upload_path) if job.upload_path else None
        if self.shared_poll_s is None or self.spool is None:
            return spooled or Path("")
        if spooled is not None and self._in_spool(spooled) and spooled.is_file():
            return spooled
        fetched = self.spool / f"{job.id}.upload"
        found = self._durably(
            f"job {job.id}: fetching its upload", lambda: self.store.fetch_upload(job.id, fetched)
        )
        if found:
            logger.info("job %s: upload fetched from the shared store (accepted by another replica)", job.id)
            return fetched
        return None

    def _analyze_here(
        self,
        path: Path,
        *,
        job_id: str,
        progress: Callable[[float], None],
        frame_scores: bool,
        should_stop: Callable[[], bool],
        camera: str | None = None,
        scene: SceneModel | None = None,
    ) -> AnalysisResult:
        return self.model.engine().analyze(
            path,
            progress=progress,
            frame_scores=frame_scores,
            should_stop=should_stop,
            camera=scene,
            camera_id=camera,
        )

    def _snapshots(self, job: JobRecord, result: AnalysisResult, upload: Path) -> str | None:
        """With `snapshots=true`: the events' peak frames, read from the upload before it is removed. A failure
        here is logged and leaves the analysis result intact (no snapshots, not a failed job)."""
        if not job.snapshots:
            return None
        try:
            taken = event_snapshots(upload, result, self.model.engine().spec.frames_per_snippet)
        except Exception:
            logger.exception("job %s: taking event snapshots failed", job.id)
            return None
        return json.dumps([s.model_dump(mode="json") for s in taken])

    def _on_progress(self, running: _Running, fraction: float) -> None:
        running.progress = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if now - running.last_write >= _PROGRESS_WRITE_INTERVAL_S:
            running.last_write = now
            try:
                self.store.set_progress(running.job_id, running.progress)
            except StorageError as exc:
                # Progress is advisory (the live value is served from memory); analysis goes on.
                logger.debug("job %s: progress not stored: %s", running.job_id, exc)

    def _count_work(self, result: AnalysisResult) -> None:
        timings = result.timings
        self.metrics.frames.labels(source="file").inc(result.frames)
        self.metrics.snippets.labels(source="file").inc(result.num_snippets)
        for key, histogram in (
            ("decode_s", self.metrics.decode_latency),
            ("backbone_s", self.metrics.backbone_latency),
            ("head_s", self.metrics.head_latency),
        ):
            if key in timings:
                histogram.labels(source="file").observe(timings[key])

    def _after_terminal(self, job_id: str, status: str, elapsed: float) -> None:
        self.metrics.jobs_finished.labels(status=status).inc()
        self.metrics.job_duration.labels(status=status).observe(elapsed)
        self._notify(job_id, self.store.get(job_id))

    def _notify(self, job_id: str, job: JobRecord | None) -> None:
        with self._lock:
            waiters = self._waiters.pop(job_id, [])
        for loop, future in waiters:
            # A waiter whose loop has closed is gone; that must not kill the worker thread.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, job)

    def _in_spool(self, path: Path) -> bool:
        return self.spool is None or path.resolve().parent == self.spool.resolve()

    def _remove_upload(self, path: str | Path | None) -> None:
        """Delete a spooled upload, if it is in this process's spool (another replica's path means nothing
        here; its file is that replica's to remove)."""
        if path and self._in_spool(Path(path)):
            Path(path).unlink(missing_ok=True)

    def forget(self, job: JobRecord) -> None:
        """After a job was deleted: stop it if running here, drop its upload, release anyone waiting on it. (A
        job running on another replica stops there at its next lease renewal.)"""
        self.cancel(job.id)
        if not self._is_running(job.id):
            self._remove_upload(job.upload_path)
        self._notify(job.id, None)

    def _is_running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._running


def _resolve(future: asyncio.Future[JobRecord | None], job: JobRecord | None) -> None:
    if not future.done():
        future.set_result(job)


def _events_of(job_id: str, result: AnalysisResult) -> list[EventRecord]:
    return [
        EventRecord(
            source_kind="job",
            source_id=job_id,
            start_s=event.start_s,
            end_s=event.end_s,
            peak_score=event.peak_score,
            mean_score=event.mean_score,
            dominant_category=event.dominant_category,
            categories=dict(event.categories),
        )
        for event in result.events
    ]
