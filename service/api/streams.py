"""Live streams: registration, state, removal, and the WebSocket of per-snippet scores."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, Depends, Query, Response, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service.api.responses import AUTH_ERRORS, errors
from service.auth import require_api_key, websocket_auth_failure
from service.context import ServiceContext, get_context
from service.errors import ApiError
from service.live.manager import InvalidStreamOptions, LiveStreamManager, StreamLimitReached
from service.live.schemas import StreamCreate, StreamList, StreamView
from service.live.urls import InvalidSourceUrl

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/streams",
    tags=["streams"],
    dependencies=[Depends(require_api_key)],
    responses=errors(*AUTH_ERRORS),
)
# WebSocket routes take no HTTP dependencies: they check the key themselves before accepting.
live_router = APIRouter(tags=["streams"])

CLOSE_POLICY = 1008
CLOSE_UNKNOWN_STREAM = 4404
CLOSE_UNAVAILABLE = 1013


def _manager(ctx: ServiceContext) -> LiveStreamManager:
    if ctx.live is None:
        raise ApiError(503, "live_disabled", "live streams are not enabled in this service")
    return ctx.live


def _known(manager: LiveStreamManager, stream_id: str) -> StreamView:
    view = manager.view(stream_id)
    if view is None:
        raise ApiError(404, "stream_not_found", f"no stream with id {stream_id!r}")
    return view


@router.post(
    "",
    response_model=StreamView,
    status_code=201,
    summary="Register a stream and start scoring it",
    responses=errors(409, 422),
)
async def create_stream(request: StreamCreate, ctx: ServiceContext = Depends(get_context)) -> StreamView:
    manager = _manager(ctx)
    try:
        return await manager.add(request)
    except InvalidSourceUrl as exc:
        raise ApiError(422, "invalid_stream_url", str(exc)) from None
    except InvalidStreamOptions as exc:
        raise ApiError(422, "invalid_stream_options", str(exc)) from None
    except StreamLimitReached as exc:
        raise ApiError(409, "too_many_streams", str(exc)) from None


@router.get("", response_model=StreamList, summary="List streams with their state")
async def list_streams(ctx: ServiceContext = Depends(get_context)) -> StreamList:
    # Off the event loop: in a cluster the views come from the live workers.
    items = await asyncio.to_thread(_manager(ctx).views)
    return StreamList(items=items, total=len(items))


@router.get("/{stream_id}", response_model=StreamView, summary="One stream's state", responses=errors(404))
async def get_stream(stream_id: str, ctx: ServiceContext = Depends(get_context)) -> StreamView:
    return await asyncio.to_thread(_known, _manager(ctx), stream_id)


@router.delete(
    "/{stream_id}",
    status_code=204,
    response_class=Response,
    summary="Stop and remove a stream",
    responses=errors(404),
)
async def delete_stream(stream_id: str, ctx: ServiceContext = Depends(get_context)) -> Response:
    if not await _manager(ctx).remove(stream_id):
        raise ApiError(404, "stream_not_found", f"no stream with id {stream_id!r}")
    return Response(status_code=204)


@live_router.websocket("/streams/{stream_id}/live")
async def live_scores(
    websocket: WebSocket,
    stream_id: str,
    since: int | None = Query(
        default=None, ge=0, description="resume: first replay kept messages from this index"
    ),
) -> None:
    """One JSON message per snippet (provisional, then final), stream state changes and notices.

    Auth: `X-API-Key` or `Authorization: Bearer` headers, or `?api_key=` (browsers cannot set WebSocket headers).
    """
    failure = await websocket_auth_failure(websocket)
    if failure is not None:
        await websocket.close(code=CLOSE_POLICY, reason=failure.message)
        return
    ctx = get_context(websocket)
    manager = ctx.live
    if manager is None:
        await websocket.close(code=CLOSE_UNAVAILABLE, reason="live streams are not enabled")
        return
    if not manager.exists(stream_id):
        await websocket.close(code=CLOSE_UNKNOWN_STREAM, reason=f"no stream with id {stream_id}")
        return
    await websocket.accept()
    subscriber = manager.hub.subscribe(stream_id, since)
    manager.metrics.clients.inc()
    timeout = ctx.settings.live_send_timeout_s

    async def watch_disconnect() -> None:
        # Clients send nothing; a receive returns only when they disconnect.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    watcher = asyncio.create_task(watch_disconnect())
    try:
        while True:
            getter = asyncio.ensure_future(subscriber.next())
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return
            text = getter.result()
            if text is None:
                break
            await asyncio.wait_for(websocket.send_text(text), timeout)
        if subscriber.close_code is not None:
            await asyncio.wait_for(
                websocket.close(code=subscriber.close_code, reason=subscriber.close_reason), timeout
            )
    except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        # A send that cannot complete (client stalled) or a vanished client: end this connection only.
        pass
    finally:
        watcher.cancel()
        manager.hub.unsubscribe(subscriber)
        manager.metrics.clients.dec()
        if (
            websocket.application_state != WebSocketState.DISCONNECTED
            and websocket.client_state != WebSocketState.DISCONNECTED
        ):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code=CLOSE_UNAVAILABLE), 1.0)
