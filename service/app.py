"""The app factory: `create_app()` builds a FastAPI app whose lifespan opens the database, loads the model in the
background, recovers interrupted jobs, starts the job workers and any further components, and stops them in reverse.

Run with `refinevad serve`, or `uvicorn --factory service.app:create_app`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from model.version import package_version
from service.api import analyze, event_media, events, health, jobs, scene, streams
from service.auth import API_KEY_HEADER, ApiKeyAuth
from service.context import ServiceContext
from service.errors import install_error_handlers
from service.jobs import JobManager
from service.live.manager import LiveStreamManager
from service.metrics import RequestMetricsMiddleware, ServiceMetrics
from service.model_service import ModelService
from service.request_limits import BodyLimitMiddleware
from service.settings import ServiceSettings, log_settings
from service.storage import Database, EventStore, JobStore
from service.uploads import PARTIAL_SUFFIX
from service.web import routes as web

logger = logging.getLogger(__name__)

# Routers of every area of the API, in the order they appear in the OpenAPI document.
ROUTERS = (
    health.public,
    health.protected,
    analyze.router,
    jobs.router,
    streams.router,
    streams.live_router,
    scene.router,
    events.router,
    event_media.router,
    web.router,
)


def build_context(settings: ServiceSettings, metrics: ServiceMetrics) -> ServiceContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_target, busy_timeout_s=settings.db_busy_timeout_s)
    # A cluster's uploads go to the shared store too: whichever replica takes a job over can read its video.
    job_store = JobStore(db, shared_uploads=bool(settings.cluster_address))
    model = ModelService(settings, metrics)
    workers, analyzer = [], None
    if settings.cluster_address:
        # Imported here: a single node never loads Ray.
        from service.cluster import runtime

        runtime.connect(settings.cluster_address)
        workers = runtime.live_workers(settings)
        analyzer = runtime.RemoteAnalyzer(settings, job_store)
    ctx = ServiceContext(
        settings=settings,
        metrics=metrics,
        auth=ApiKeyAuth(settings.api_key_values()),
        db=db,
        job_store=job_store,
        event_store=EventStore(db),
        model=model,
        jobs=JobManager(
            job_store,
            model,
            metrics,
            workers=settings.job_workers,
            max_attempts=settings.job_max_attempts,
            analyzer=analyzer,
            lease_s=settings.job_lease_s,
            shared_poll_s=settings.job_poll_s if settings.cluster_address else None,
            spool=settings.upload_dir,
        ),
    )
    if settings.cluster_address:
        from service.cluster.streams import ClusterStreams

        ctx.live = ClusterStreams(settings, db, model, metrics, workers)
    else:
        ctx.live = LiveStreamManager(settings, db, model, metrics)
    ctx.jobs.scenes = ctx.live.scenes
    ctx.components.append(ctx.live)
    return ctx


def _clean_spool(ctx: ServiceContext) -> None:
    """Uploads that no unfinished job refers to are leftovers of a crash mid-upload or mid-cleanup."""
    in_use = {Path(p).resolve() for p in ctx.job_store.upload_paths_in_use()}
    for path in ctx.settings.upload_dir.iterdir():
        if path.is_file() and (path.suffix == PARTIAL_SUFFIX or path.resolve() not in in_use):
            logger.info("removing orphaned upload %s", path)
            path.unlink(missing_ok=True)
    if ctx.settings.cluster_address:
        from service.cluster.runtime import remove_orphaned_task_copies

        remove_orphaned_task_copies(ctx.settings, ctx.job_store)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    ctx: ServiceContext = app.state.services
    log_settings(ctx.settings)
    ctx.model.start()
    ctx.jobs.recover()
    _clean_spool(ctx)
    ctx.jobs.start()
    started: list = []
    try:
        for component in ctx.components:
            await component.start()
            started.append(component)
        logger.info("service started; database %s", ctx.db.describe())
        yield
    finally:
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:
                logger.exception("error while stopping %r", component)
        await asyncio.to_thread(ctx.jobs.stop)
        ctx.db.close()
        logger.info("service stopped")


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    app = FastAPI(
        title="RefineVAD",
        version=package_version(),
        summary="Video anomaly detection: anomaly scores with a category breakdown for video files and streams.",
        lifespan=lifespan,
    )
    app.state.services = build_context(settings, metrics)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[API_KEY_HEADER, "Authorization", "Content-Type"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_json_kb * 1024,
        exempt=frozenset({"/analyze"}),
        exempt_suffixes=("/scene/footage",),
        idle_timeout_s=settings.upload_idle_timeout_s,
        max_duration_s=settings.json_body_max_s,
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
