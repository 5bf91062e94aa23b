"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from model.version import package_version
from service.api.responses import AUTH_ERRORS, errors
from service.auth import require_api_key
from service.context import ServiceContext, get_context
from service.metrics import CONTENT_TYPE
from service.schemas import Health, Readiness

public = APIRouter(tags=["health"])
protected = APIRouter(
    tags=["health"], dependencies=[Depends(require_api_key)], responses=errors(*AUTH_ERRORS)
)


@public.get("/health", response_model=Health, summary="The process is up (no API key needed)")
async def health() -> Health:
    return Health(status="ok", version=package_version())


@protected.get(
    "/ready",
    response_model=Readiness,
    summary="The model is loaded and warm, and jobs are being processed",
    responses={503: {"model": Readiness, "description": "not ready yet, or the model failed to load"}},
)
async def ready(ctx: ServiceContext = Depends(get_context)) -> Response:
    model = ctx.model
    body = Readiness(
        ready=model.ready,
        state=model.state,
        error=model.error,
        model=model.identity,
        device=model.device,
        queue_depth=ctx.jobs.queue_depth,
        acceleration=model.acceleration,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if model.ready else 503)


@protected.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "metrics"}},
)
async def metrics(ctx: ServiceContext = Depends(get_context)) -> Response:
    ctx.metrics.queue_depth.labels(queue="jobs").set(ctx.jobs.queue_depth)
    # In a thread: in a cluster, rendering waits (briefly) for the live workers' metrics.
    return Response(await asyncio.to_thread(ctx.metrics.render), media_type=CONTENT_TYPE)
