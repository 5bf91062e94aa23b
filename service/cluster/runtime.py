"""Joining the Ray cluster, and the Ray-side pieces: the live workers (named, detached actors, one per node: see
`placement`), and file analysis as Ray tasks (queued by Ray across the cluster, re-run by Ray when the node
running one dies)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import ray

from model.inference import AnalysisCancelled, AnalysisResult
from model.scene import SceneModel
from service.metrics import ServiceMetrics
from service.model_service import ModelService
from service.scene.registry import scene_settings
from service.settings import ServiceSettings
from service.storage import Database, JobStore, StorageError

if TYPE_CHECKING:
    from service.cluster.placement import LiveWorkers

logger = logging.getLogger(__name__)

NAMESPACE = "refinevad"
# Calls that only read (metrics, a stream's latest frame) run in this group of a live worker, beside the default
# one: they never queue behind a long `sync`.
READS_GROUP = "reads"
_POLL_S = 0.5


def connect(address: str) -> None:
    """Join the cluster as a driver (`HOST:PORT` of the head's GCS)."""
    if ray.is_initialized():
        return
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    resources = ray.cluster_resources()
    logger.info(
        "joined Ray cluster %s: %d nodes, %s CPUs, %s GPUs",
        address,
        len([n for n in ray.nodes() if n["Alive"]]),
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )


# A live worker takes more than half a GPU, so no two ever share one GPU, and a job's share fits beside it.
LIVE_WORKER_GPUS = 0.6
JOB_GPUS = 0.4


def gpu_share(setting: float | None, share: float) -> float:
    """The GPUs to reserve: the setting, else `share` when the cluster has GPUs at all, else none."""
    if setting is not None:
        return setting
    return share if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def live_workers(settings: ServiceSettings) -> LiveWorkers:
    """The live workers as this API replica sees them, placed one per node (`placement.LiveWorkers`): the first
    replica to look creates them; they are detached and outlive it."""
    from service.cluster.placement import LiveWorkers

    workers = LiveWorkers(settings)
    workers.refresh()
    return workers


def task_copies_dir(settings: ServiceSettings) -> Path:
    """Where a job's Ray task keeps its copy of the upload while it runs (`<job id>-<random><suffix>`): in the
    node's data directory (absolute, whatever the Ray worker's working directory), so a task killed with its
    process leaves nothing in the system's temporary folder. What is left is removed by the next Ray worker
    process that runs a job on the node, and by a service start there (`remove_orphaned_task_copies`)."""
    return (settings.upload_dir / "tasks").absolute()


def remove_orphaned_task_copies(settings: ServiceSettings, jobs: JobStore) -> int:
    """Delete task copies of jobs that are finished or unknown (their task died with its process); returns how
    many. A copy of an unfinished job is kept: its task may be running on this node."""
    folder = task_copies_dir(settings)
    removed = 0
    for path in folder.glob("*-*") if folder.is_dir() else ():
        job = jobs.get(path.name.split("-", 1)[0])
        if job is None or job.terminal:
            logger.info("removing the upload copy %s of a finished cluster job", path)
            path.unlink(missing_ok=True)
            removed += 1
    return removed


# One engine per Ray worker process, loaded by its first job and reused by the next ones.
_MODEL: ModelService | None = None
_JOBS: JobStore | None = None


def _process_model(settings: ServiceSettings) -> tuple[ModelService, JobStore]:
    global _MODEL, _JOBS
    if _MODEL is None or _JOBS is None:
        _MODEL = ModelService(settings, ServiceMetrics())
        _MODEL.start()
        _JOBS = JobStore(Database(settings.database_target, busy_timeout_s=settings.db_busy_timeout_s))
        # Copies that tasks killed with their processes left on this node (nodes that run no service too).
        with contextlib.suppress(OSError, StorageError):
            remove_orphaned_task_copies(settings, _JOBS)
    if not _MODEL.wait_until_loaded():
        raise RuntimeError(f"the model failed to load on this node: {_MODEL.error}")
    return _MODEL, _JOBS


def analyze_on_cluster(
    settings: ServiceSettings,
    job_id: str,
    data: bytes,
    suffix: str,
    frame_scores: bool,
    camera: str | None = None,
    scene: bytes | None = None,
) -> str:
    """The body of a job's Ray task: the upload's bytes to a local file, the engine, the result as JSON.
    Progress goes to the shared store, where the replica that owns the job reads it. `scene`: the camera's
    scene model (`SceneModel.to_bytes()`) to score with, for `?camera=`."""
    model, jobs = _process_model(settings)
    scene_model = (
        None
        if scene is None
        else SceneModel.from_bytes(scene, scene_settings(settings.scene_learn_s, settings.scene_max_mb))
    )
    last = [0.0]

    def progress(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] >= _POLL_S:
            last[0] = now
            with contextlib.suppress(StorageError):  # advisory
                jobs.set_progress(job_id, float(fraction))

    folder = task_copies_dir(settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a node without the configured data directory
        logger.warning("cannot use %s for the upload copy (%s); using the temporary folder", folder, exc)
        folder = Path(tempfile.gettempdir())
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f"{job_id}-", suffix=suffix) as handle:
        handle.write(data)
        handle.flush()
        result = model.engine().analyze(
            Path(handle.name),
            progress=progress,
            frame_scores=frame_scores,
            camera=scene_model,
            camera_id=camera,
        )
    logger.info(
        "job %s analysed on node %s (pid %d)", job_id, ray.get_runtime_context().get_node_id(), os.getpid()
    )
    return result.model_dump_json()


class RemoteAnalyzer:
    """`JobManager`'s analysis step in cluster mode: the job runs as a Ray task on a node with room (a GPU, when
    the cluster has them); Ray re-runs it if that node dies (`max_retries`)."""

    def __init__(self, settings: ServiceSettings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self._task = ray.remote(analyze_on_cluster).options(
            num_cpus=1,
            num_gpus=gpu_share(settings.cluster_job_gpus, JOB_GPUS),
            max_retries=settings.cluster_job_retries,
        )

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
    ) -> AnalysisResult:
        ref = self._task.remote(
            self.settings,
            job_id,
            path.read_bytes(),
            path.suffix,
            frame_scores,
            camera,
            None if scene is None else scene.to_bytes(),
        )
        while True:
            done, _ = ray.wait([ref], timeout=_POLL_S)
            if done:
                try:
                    return AnalysisResult.model_validate_json(ray.get(ref))
                except ray.exceptions.TaskCancelledError:
                    raise AnalysisCancelled() from None
            if should_stop():
                ray.cancel(ref, force=True)
            job = self.store.get(job_id)
            if job is not None:
                progress(job.progress)
