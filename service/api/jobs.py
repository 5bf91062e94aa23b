"""Analysis jobs: status, progress and results; listing; deletion."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Response
from pydantic import TypeAdapter

from model.inference import AnalysisResult, VideoInfo
from service.api.responses import AUTH_ERRORS, errors
from service.auth import require_api_key
from service.context import ServiceContext, get_context
from service.errors import ApiError
from service.schemas import EventSnapshot, Job, JobList, JobStatus, JobSummary, timestamp
from service.storage import JobRecord

router = APIRouter(
    prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)], responses=errors(*AUTH_ERRORS)
)


def job_summary(record: JobRecord, live_progress: float | None = None) -> JobSummary:
    return JobSummary(
        id=record.id,
        status=JobStatus(record.status),
        progress=live_progress if live_progress is not None else record.progress,
        created_at=timestamp(record.created_at),
        started_at=timestamp(record.started_at),
        finished_at=timestamp(record.finished_at),
        filename=record.filename,
        size_bytes=record.size_bytes,
        frame_scores=record.frame_scores,
        snapshots=record.snapshots,
        video=VideoInfo.model_validate_json(record.video_json) if record.video_json else None,
        error=record.error,
        note=record.note,
        attempts=record.attempts,
    )


def job_view(record: JobRecord, live_progress: float | None = None) -> Job:
    summary = job_summary(record, live_progress)
    result = AnalysisResult.model_validate_json(record.result_json) if record.result_json else None
    snapshots = (
        TypeAdapter(list[EventSnapshot]).validate_json(record.snapshots_json)
        if record.snapshots_json
        else None
    )
    return Job(**summary.model_dump(), result=result, event_snapshots=snapshots)


def _known(ctx: ServiceContext, job_id: str) -> JobRecord:
    record = ctx.job_store.get(job_id)
    if record is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return record


@router.get("", response_model=JobList, summary="List jobs, newest first (without results)")
async def list_jobs(
    status: JobStatus | None = Query(default=None, description="only jobs in this state"),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=2**31),
    ctx: ServiceContext = Depends(get_context),
) -> JobList:
    records, total = ctx.job_store.list(status.value if status else None, limit=limit, offset=offset)
    items = [job_summary(r, ctx.jobs.progress(r.id)) for r in records]
    return JobList(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{job_id}", response_model=Job, summary="A job's status, progress and result", responses=errors(404)
)
async def get_job(job_id: str, ctx: ServiceContext = Depends(get_context)) -> Job:
    record = _known(ctx, job_id)
    return job_view(record, ctx.jobs.progress(job_id))


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a job with its result and events (a running job is stopped)",
    responses=errors(404),
)
async def delete_job(job_id: str, ctx: ServiceContext = Depends(get_context)) -> Response:
    record = await asyncio.to_thread(ctx.job_store.delete, job_id)
    if record is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    ctx.jobs.forget(record)
    return Response(status_code=204)
