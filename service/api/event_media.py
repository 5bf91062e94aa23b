"""Event snapshots and clips, and a stream's latest frame, as files a browser can show directly.

`GET /events/{id}/snapshot.jpg` (the peak's frame), `GET /events/{id}/clip.mp4` (404 until the clip is finished;
HTTP range requests, so players can seek) and `GET /streams/{id}/snapshot.jpg` (the newest frame). The key may come
as `?api_key=` as well as in headers, since `<img>` and `<video>` cannot send headers.

A single node serves the files under `DATA_DIR/media`; a cluster's replicas serve the media stored in the shared
database (`MediaStore.shared`), so any replica answers for any event, whichever machine recorded it.
"""

from __future__ import annotations

import asyncio
import itertools
import re

from fastapi import APIRouter, Depends, Header, Response
from fastapi.responses import FileResponse, StreamingResponse

from service.api.events import EventId
from service.api.responses import AUTH_ERRORS, errors
from service.auth import require_api_key_or_query
from service.context import ServiceContext, get_context
from service.errors import ApiError
from service.event_media.recorder import EventMedia

router = APIRouter(
    tags=["event media"], dependencies=[Depends(require_api_key_or_query)], responses=errors(*AUTH_ERRORS)
)

_NO_STORE = {"Cache-Control": "no-store"}
_IMMUTABLE = {"Cache-Control": "private, max-age=3600"}


def _media(ctx: ServiceContext) -> EventMedia:
    if ctx.live is None or ctx.live.media is None:
        raise ApiError(
            503, "media_disabled", "event media are not enabled in this service (REFINEVAD_MEDIA_ENABLED)"
        )
    return ctx.live.media


@router.get(
    "/events/{event_id}/snapshot.jpg",
    response_class=Response,
    summary="The JPEG snapshot of an event's peak",
    responses={200: {"content": {"image/jpeg": {}}}, **errors(404, 503)},
)
async def event_snapshot(event_id: EventId, ctx: ServiceContext = Depends(get_context)) -> Response:
    media = _media(ctx)
    record = await asyncio.to_thread(media.store.get, event_id)
    missing = ApiError(404, "snapshot_not_found", f"event {event_id} has no snapshot")
    if record is None or record.snapshot_bytes == 0:
        raise missing
    # The snapshot changes while the event is open (a new peak): not cached.
    if media.store.shared:
        data = await asyncio.to_thread(media.store.read_snapshot, event_id)
        if data is None:
            raise missing
        return Response(data, media_type="image/jpeg", headers=_NO_STORE)
    path = media.store.snapshot_path(event_id)
    if not path.is_file():
        raise missing
    return FileResponse(path, media_type="image/jpeg", headers=_NO_STORE)


@router.get(
    "/events/{event_id}/clip.mp4",
    response_class=Response,
    summary="The MP4 clip of an event (404 until finished; supports range requests)",
    responses={
        200: {"content": {"video/mp4": {}}},
        206: {"description": "the requested byte range"},
        **errors(404, 416, 503),
    },
)
async def event_clip(
    event_id: EventId,
    ctx: ServiceContext = Depends(get_context),
    range_: str | None = Header(default=None, alias="Range", include_in_schema=False),
) -> Response:
    media = _media(ctx)
    record = await asyncio.to_thread(media.store.get, event_id)
    path = media.store.clip_path(event_id)
    if (
        record is None
        or record.clip_status != "ready"
        or (media.store.shared and record.clip_bytes == 0)
        or (not media.store.shared and not path.is_file())
    ):
        state = "no clip" if record is None else f"clip {record.clip_status}"
        raise ApiError(404, "clip_not_found", f"event {event_id}: {state}")
    if not media.store.shared:
        return FileResponse(path, media_type="video/mp4", headers=_IMMUTABLE)
    size = record.clip_bytes
    wanted = byte_range(range_, size)
    start, stop = wanted or (0, size)
    parts = media.store.read_clip(event_id, start, stop)
    # The first part read before answering: a clip removed since (retention) is a 404, not an empty 200.
    first = await asyncio.to_thread(next, parts, None)
    if first is None:
        raise ApiError(404, "clip_not_found", f"event {event_id}: clip removed")
    headers = {**_IMMUTABLE, "Accept-Ranges": "bytes", "Content-Length": str(stop - start)}
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    # A sync iterator: Starlette reads the rest in its thread pool, one stored part at a time.
    return StreamingResponse(
        itertools.chain([first], parts),
        status_code=206 if wanted is not None else 200,
        media_type="video/mp4",
        headers=headers,
    )


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range `[start, stop)` a `Range` header asks of `size` bytes, or None for the whole: no header,
    several ranges, or one that does not parse (RFC 9110 lets a server ignore those). Raises ApiError 416 when
    the range starts at or past the end."""
    match = _RANGE.fullmatch((header or "").strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, stop = max(0, size - int(last)), size
    else:
        start, stop = int(first), size if last == "" else min(size, int(last) + 1)
    if start >= size:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the clip has {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    if stop <= start:
        return None
    return start, stop


@router.get(
    "/streams/{stream_id}/snapshot.jpg",
    summary="The newest frame of a stream, as JPEG",
    responses={200: {"content": {"image/jpeg": {}}}, **errors(404, 503)},
)
async def stream_snapshot(stream_id: str, ctx: ServiceContext = Depends(get_context)) -> Response:
    _media(ctx)
    assert ctx.live is not None
    if not await asyncio.to_thread(ctx.live.exists, stream_id):
        raise ApiError(404, "stream_not_found", f"no stream with id {stream_id!r}")
    # From this process's frames, or in a cluster from the live worker that reads the stream.
    data = await asyncio.to_thread(ctx.live.latest_jpeg, stream_id)
    if data is None:
        raise ApiError(404, "no_frame_yet", f"stream {stream_id} has not delivered a frame yet")
    return Response(data, media_type="image/jpeg", headers=_NO_STORE)
