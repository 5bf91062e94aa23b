"""Anomaly events of live streams and analysed files, newest first, with filters; deleting one (with its media)."""

from __future__ import annotations

import asyncio
import threading
import weakref
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response

from service.api.responses import AUTH_ERRORS, errors
from service.auth import require_api_key
from service.context import ServiceContext, get_context
from service.errors import ApiError
from service.live.events import EventFilter
from service.live.schemas import EventList, EventView, event_view
from service.scene.store import FeedbackStore
from service.storage import Database

# An event id in a path: SQLite's integer range, so an absurd id is a 422, not a database error.
EventId = Annotated[int, Path(ge=0, le=2**63 - 1, description="the event's id")]

# One FeedbackStore per database: its migrations run once, not on every request.
_feedback_stores: weakref.WeakKeyDictionary[Database, FeedbackStore] = weakref.WeakKeyDictionary()
_feedback_lock = threading.Lock()


def feedback_store(db: Database) -> FeedbackStore:
    """The database's operator verdicts (created, with its table, on first use)."""
    with _feedback_lock:
        store = _feedback_stores.get(db)
        if store is None:
            store = _feedback_stores[db] = FeedbackStore(db)
        return store


router = APIRouter(
    prefix="/events", tags=["events"], dependencies=[Depends(require_api_key)], responses=errors(*AUTH_ERRORS)
)


@router.get("", response_model=EventList, summary="List events, newest first", responses=errors(422))
async def list_events(
    stream: str | None = Query(default=None, max_length=200, description="only this stream's events"),
    job: str | None = Query(default=None, max_length=200, description="only this analysis job's events"),
    source: Literal["stream", "job"] | None = Query(
        default=None, description="only live or only file events"
    ),
    since: datetime | None = Query(default=None, description="events still going on at or after this time"),
    until: datetime | None = Query(default=None, description="events that started at or before this time"),
    category: str | None = Query(default=None, max_length=200, description="dominant category"),
    min_score: float | None = Query(default=None, ge=0, le=1, description="peak score at least this"),
    status: Literal["open", "closed", "interrupted"] | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=2**31),
    ctx: ServiceContext = Depends(get_context),
) -> EventList:
    if stream is not None and job is not None:
        raise ApiError(422, "invalid_request", "filter by stream or by job, not both")
    if since is not None and until is not None and since > until:
        raise ApiError(422, "invalid_request", "`since` is after `until`")
    if ctx.live is None:
        raise ApiError(503, "live_disabled", "live streams are not enabled in this service")
    source_kind = "stream" if stream is not None else "job" if job is not None else source
    rows, total = ctx.live.event_store.query(
        EventFilter(
            source_kind=source_kind,
            source_id=stream if stream is not None else job,
            since=since.timestamp() if since is not None else None,
            until=until.timestamp() if until is not None else None,
            category=category,
            min_score=min_score,
            status=status,
            limit=limit,
            offset=offset,
        )
    )
    ids = [r["id"] for r in rows]
    media = ctx.live.media.store.of_events(ids) if ctx.live.media is not None else {}
    verdicts = feedback_store(ctx.db).of_events(ids)
    return EventList(
        items=[event_view(r, media.get(r["id"]), verdicts.get(r["id"])) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{event_id}", response_model=EventView, summary="One event", responses=errors(404))
async def get_event(event_id: EventId, ctx: ServiceContext = Depends(get_context)) -> EventView:
    if ctx.live is None:
        raise ApiError(503, "live_disabled", "live streams are not enabled in this service")
    row = ctx.live.event_store.get(event_id)
    if row is None:
        raise ApiError(404, "event_not_found", f"no event with id {event_id}")
    media = ctx.live.media.store.get(event_id) if ctx.live.media is not None else None
    return event_view(row, media, feedback_store(ctx.db).of_events([event_id]).get(event_id))


@router.delete(
    "/{event_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an event with its snapshot and clip",
    responses=errors(404, 409),
)
async def delete_event(event_id: EventId, ctx: ServiceContext = Depends(get_context)) -> Response:
    if ctx.live is None:
        raise ApiError(503, "live_disabled", "live streams are not enabled in this service")
    live = ctx.live
    row = await asyncio.to_thread(live.event_store.get, event_id)
    if row is None:
        raise ApiError(404, "event_not_found", f"no event with id {event_id}")
    if row.get("status") == "open":
        raise ApiError(409, "event_open", f"event {event_id} is still open; delete it once it has ended")
    await asyncio.to_thread(live.event_store.delete, event_id)
    if live.scenes is not None:
        await asyncio.to_thread(live.scenes.event_regions.delete, event_id)
    if live.media is not None:
        await asyncio.to_thread(live.media.store.delete, event_id)
    return Response(status_code=204)
