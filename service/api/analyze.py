"""`POST /analyze`: upload a video; short ones are answered with the result, long ones with a job to poll."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from model.video.pyav_source import NotVideoError
from model.video.source import VideoDecodeError
from service.api.jobs import job_view
from service.api.responses import AUTH_ERRORS, errors
from service.auth import require_api_key
from service.context import ServiceContext, get_context
from service.errors import ApiError
from service.jobs import PRIORITY_BACKGROUND, PRIORITY_WAITING
from service.schemas import Job
from service.settings import ServiceSettings
from service.storage import JobRecord
from service.uploads import FILE_FIELD, PARTIAL_SUFFIX, UploadPace, receive_video_upload

logger = logging.getLogger(__name__)

router = APIRouter(tags=["analysis"], dependencies=[Depends(require_api_key)], responses=errors(*AUTH_ERRORS))

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "the video (mp4, mov, mkv, avi, MPEG-TS, raw H.264/H.265, ...); "
                            "recognised by its content, whatever its name",
                        }
                    },
                }
            }
        },
    }
}


def upload_pace(settings: ServiceSettings) -> UploadPace:
    """The configured limits of a video upload (`/analyze` and every route that takes one)."""
    return UploadPace(
        idle_timeout_s=settings.upload_idle_timeout_s,
        min_bytes_per_s=settings.upload_min_rate_kib_s * 1024,
        grace_s=settings.upload_rate_grace_s,
        max_duration_s=settings.upload_max_duration_s,
    )


@router.post(
    "/analyze",
    response_model=Job,
    summary="Analyse an uploaded video",
    description=(
        f"Multipart upload with the video in the field `{FILE_FIELD}`. Videos up to the configured duration "
        "(`sync_max_seconds`) are analysed before the answer (200, the finished job with its result); longer "
        "ones, or any with `background=true`, get 202 with the queued job at once; poll `GET /jobs/{id}`."
    ),
    openapi_extra=UPLOAD_BODY,
    responses={
        202: {"model": Job, "description": "accepted; analysed in the background"},
        **errors(400, 404, 408, 409, 413, 415, 422, 500, 503, 507),
    },
)
async def analyze(
    request: Request,
    frame_scores: bool = Query(default=False, description="also return one score per frame"),
    snapshots: bool = Query(default=False, description="also return a JPEG of each event's peak"),
    background: bool = Query(default=False, description="always answer 202 at once, whatever the length"),
    camera: str | None = Query(
        default=None,
        max_length=200,
        description="a stream id: score the video with that camera's scene model too (scene_score, fused score)",
    ),
    ctx: ServiceContext = Depends(get_context),
) -> Response:
    engine = ctx.model.engine()  # 503 before reading a byte when there is no model
    if camera is not None and (ctx.live is None or not ctx.live.exists(camera)):
        raise ApiError(404, "stream_not_found", f"no stream with id {camera!r} (the `camera` to score with)")
    settings = ctx.settings
    job_id = uuid.uuid4().hex
    spool = settings.upload_dir
    try:
        upload = await receive_video_upload(
            request,
            spool / f"{job_id}{PARTIAL_SUFFIX}",
            settings.max_upload_bytes,
            upload_pace(settings),
        )
    except ApiError as exc:
        ctx.metrics.uploads_rejected.labels(reason=exc.code).inc()
        raise
    # No extension: the decoder identifies the format by the bytes alone, never by the client's file name.
    path = upload.path.rename(spool / f"{job_id}.upload")
    try:
        video = await asyncio.to_thread(engine.probe, path)
    except NotVideoError as exc:
        path.unlink(missing_ok=True)
        ctx.metrics.uploads_rejected.labels(reason="not_video").inc()
        reason = str(exc).replace(str(path), "the upload")
        raise ApiError(415, "not_video", f"{upload.filename!r} is not a video: {reason}") from None
    except VideoDecodeError as exc:
        path.unlink(missing_ok=True)
        ctx.metrics.uploads_rejected.labels(reason="invalid_video").inc()
        reason = str(exc).replace(str(path), "the upload")
        raise ApiError(
            422, "invalid_video", f"{upload.filename!r} cannot be analysed as a video: {reason}"
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    ctx.metrics.upload_bytes.inc(upload.size)

    # Unknown duration (no frame count in the container) counts as long.
    wait = not background and video.duration_s is not None and video.duration_s <= settings.sync_max_seconds
    new_job = JobRecord(
        id=job_id,
        status="queued",
        created_at=time.time(),
        filename=upload.filename,
        content_type=upload.content_type,
        size_bytes=upload.size,
        upload_path=str(path),
        frame_scores=frame_scores,
        snapshots=snapshots,
        video_json=video.model_dump_json(),
        camera=camera,
    )
    try:
        # Off the event loop: a write may wait for a database locked by another process.
        record = await asyncio.to_thread(ctx.job_store.create, new_job)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    ctx.metrics.jobs_submitted.labels(mode="sync" if wait else "background").inc()
    logger.info(
        "job %s: %r, %d bytes, %s s of video, %s",
        job_id,
        upload.filename,
        upload.size,
        video.duration_s,
        "answered synchronously" if wait else "queued",
    )
    if not wait:
        ctx.jobs.enqueue(job_id, PRIORITY_BACKGROUND)
        body = job_view(record).model_dump(mode="json")
        return JSONResponse(body, status_code=202, headers={"Location": f"/jobs/{job_id}"})

    ctx.jobs.enqueue(job_id, PRIORITY_WAITING)
    finished = await ctx.jobs.wait(job_id)
    if finished is None:
        raise ApiError(409, "job_deleted", f"job {job_id} was deleted before it finished")
    if finished.status == "failed" and finished.error_code == "undecodable_video":
        # The client's file is bad: answer 4xx and keep nothing of it.
        await asyncio.to_thread(ctx.job_store.delete, job_id)
        raise ApiError(422, "invalid_video", finished.error or "the video could not be decoded")
    if finished.status == "failed":
        raise ApiError(
            500,
            finished.error_code or "analysis_failed",
            finished.error or "analysis failed",
            detail={"job_id": job_id},
        )
    return JSONResponse(job_view(finished).model_dump(mode="json"), headers={"Location": f"/jobs/{job_id}"})
