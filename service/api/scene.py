"""Each camera's scene model (model.scene): its state, learning from footage known to be normal, forgetting it;
and operators' verdicts on events (`POST /events/{id}/feedback`), whose false alarms the camera learns at once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from model.scene import SceneStatus
from model.video.pyav_source import NotVideoError
from model.video.source import VideoDecodeError
from service.api.analyze import UPLOAD_BODY, upload_pace
from service.api.events import EventId, feedback_store
from service.api.responses import AUTH_ERRORS, errors
from service.auth import require_api_key
from service.context import ServiceContext, get_context
from service.errors import ApiError
from service.scene.registry import SceneRegistry
from service.uploads import PARTIAL_SUFFIX, receive_video_upload

logger = logging.getLogger(__name__)

router = APIRouter(tags=["scene"], dependencies=[Depends(require_api_key)], responses=errors(*AUTH_ERRORS))


class SceneView(SceneStatus):
    stream_id: str


class Feedback(BaseModel):
    verdict: Literal["false_alarm", "confirmed"]
    category: str | None = Field(default=None, max_length=200, description="the kind, for a confirmed event")


class FeedbackView(BaseModel):
    event_id: int
    verdict: Literal["false_alarm", "confirmed"]
    category: str | None
    learned_snippets: int = Field(
        description="false alarm: the event's snippets the camera's scene model learned as normal"
    )
    created_at: float


def scenes_of(ctx: ServiceContext) -> SceneRegistry:
    scenes = getattr(ctx.live, "scenes", None)
    if scenes is None:
        raise ApiError(
            503, "scene_models_disabled", "scene models are off (REFINEVAD_SCENE_MODELS) or unavailable"
        )
    return scenes


def _known_stream(ctx: ServiceContext, stream_id: str) -> None:
    if ctx.live is None or not ctx.live.exists(stream_id):
        raise ApiError(404, "stream_not_found", f"no stream with id {stream_id!r}")


@router.get(
    "/streams/{stream_id}/scene",
    response_model=SceneView,
    summary="A camera's scene model",
    responses=errors(404),
)
async def get_scene(stream_id: str, ctx: ServiceContext = Depends(get_context)) -> SceneView:
    _known_stream(ctx, stream_id)
    status = await asyncio.to_thread(scenes_of(ctx).status, stream_id)
    return SceneView(stream_id=stream_id, **status.model_dump())


@router.delete(
    "/streams/{stream_id}/scene",
    status_code=204,
    response_class=Response,
    summary="Forget a camera's scene model (the camera was moved); it learns again from its footage",
    responses=errors(404),
)
async def forget_scene(stream_id: str, ctx: ServiceContext = Depends(get_context)) -> Response:
    _known_stream(ctx, stream_id)
    await asyncio.to_thread(scenes_of(ctx).forget, stream_id)
    return Response(status_code=204)


@router.post(
    "/streams/{stream_id}/scene/footage",
    response_model=SceneView,
    summary="Learn a recording known to be normal",
    description="Multipart upload with the video in the field `file`, as for `POST /analyze` (same limits and "
    "errors). Its whole duration counts towards `scene_learn_s`; answers with the scene's status.",
    openapi_extra=UPLOAD_BODY,
    responses=errors(400, 404, 408, 413, 415, 422, 503, 507),
)
async def learn_footage(
    stream_id: str, request: Request, ctx: ServiceContext = Depends(get_context)
) -> SceneView:
    _known_stream(ctx, stream_id)
    scenes = scenes_of(ctx)
    engine = ctx.model.engine()
    settings = ctx.settings
    spool = settings.upload_dir
    upload = await receive_video_upload(
        request,
        spool / f"scene-{uuid.uuid4().hex}{PARTIAL_SUFFIX}",
        settings.max_upload_bytes,
        upload_pace(settings),
    )
    path = upload.path
    try:
        await asyncio.to_thread(engine.probe, path)
        encoded = await asyncio.to_thread(engine.encode, path, None, None, True)
    except NotVideoError as exc:
        raise ApiError(
            415, "not_video", f"{upload.filename!r} is not a video: {exc}".replace(str(path), "the upload")
        ) from None
    except VideoDecodeError as exc:
        reason = str(exc).replace(str(path), "the upload")
        raise ApiError(
            422, "invalid_video", f"{upload.filename!r} cannot be learned as a video: {reason}"
        ) from None
    finally:
        path.unlink(missing_ok=True)
    assert encoded.regions is not None
    seconds = (
        encoded.info.duration_s or len(encoded.regions) * engine.spec.frames_per_snippet / encoded.info.fps
    )
    status = await asyncio.to_thread(scenes.learn, stream_id, encoded.regions, seconds)
    logger.info(
        "stream %s: learned %d snippets (%.1f s) of normal footage from %r; scene %s",
        stream_id,
        len(encoded.regions),
        seconds,
        upload.filename,
        status.state,
    )
    return SceneView(stream_id=stream_id, **status.model_dump())


@router.post(
    "/events/{event_id}/feedback",
    response_model=FeedbackView,
    summary="An operator's verdict on an event",
    description="`false_alarm`: the event's snippets join its camera's scene model at once (pinned), so the same "
    "footage does not fire again; `confirmed` keeps the event as labelled data. Replaces an earlier verdict.",
    responses=errors(404, 409, 422),
)
async def event_feedback(
    event_id: EventId, feedback: Feedback, ctx: ServiceContext = Depends(get_context)
) -> FeedbackView:
    if ctx.live is None:
        raise ApiError(503, "live_disabled", "live streams are not enabled in this service")
    row = await asyncio.to_thread(ctx.live.event_store.get, event_id)
    if row is None:
        raise ApiError(404, "event_not_found", f"no event with id {event_id}")
    if (row.get("status") or "closed") == "open":
        raise ApiError(409, "event_open", f"event {event_id} is still open: give a verdict once it has ended")
    names = ctx.model.engine().category_names
    if feedback.category is not None and feedback.category not in names:
        raise ApiError(
            422, "invalid_category", f"unknown category {feedback.category!r}; the model knows {names}"
        )
    learned = 0
    if feedback.verdict == "false_alarm" and row["source_kind"] == "stream":
        scenes = getattr(ctx.live, "scenes", None)
        if scenes is not None:
            end = row["end_s"] if row["end_s"] is not None else row["start_s"]
            learned = await asyncio.to_thread(
                scenes.learn_false_alarm, row["source_id"], row["start_s"], end, event_id
            )
    stored = await asyncio.to_thread(
        feedback_store(ctx.db).put, event_id, feedback.verdict, feedback.category, learned
    )
    return FeedbackView(**stored)
