"""Fan-out of each stream's messages to its WebSocket subscribers, on the event loop.

The scheduler thread hands a batch of already-serialised messages to the loop (`publish_threadsafe`); the hub
appends them to the stream's bounded replay buffer and offers them to every subscriber's bounded queue without
waiting. A subscriber whose queue is full (a slow or stalled client) is dropped on the spot: its queue is replaced
by one notice saying where to resume from, and its connection is closed. Nothing here ever blocks the pipeline
or lets one client delay another, and memory per stream is bounded by the replay size plus clients x queue size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from service.live.messages import NoticeMessage

logger = logging.getLogger(__name__)

CLOSE = None  # queue sentinel: the subscription is over


@dataclass(eq=False)
class Subscriber:
    stream_id: str
    queue: asyncio.Queue[str | None]
    last_index: int = -1  # highest snippet index offered, for the resume hint
    close_code: int | None = None
    close_reason: str = ""

    async def next(self) -> str | None:
        """The next message text, or None once the subscription has ended."""
        return await self.queue.get()

    def end(self, code: int, reason: str, notice: str | None = None) -> None:
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        while not self.queue.empty():
            self.queue.get_nowait()
        if notice is not None:
            self.queue.put_nowait(notice)
        self.queue.put_nowait(CLOSE)


@dataclass(eq=False)
class _Channel:
    replay: deque[tuple[int, str]]
    subscribers: set[Subscriber] = field(default_factory=set)
    state_text: str | None = None


# WebSocket close codes the hub ends subscriptions with.
CLOSE_TOO_SLOW = 1013  # "try again later": resume with ?since=
CLOSE_STREAM_REMOVED = 1001  # "going away"


class LiveHub:
    def __init__(self, client_queue: int, replay: int, on_drop: Callable[[], None] | None = None) -> None:
        # Room for the drop notice and the close sentinel on top of the messages.
        self.client_queue = client_queue
        self.replay = replay
        self._channels: dict[str, _Channel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped_clients = 0
        self._on_drop = on_drop

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _channel(self, stream_id: str) -> _Channel:
        channel = self._channels.get(stream_id)
        if channel is None:
            channel = self._channels[stream_id] = _Channel(deque(maxlen=self.replay))
        return channel

    # -- called from other threads -------------------------------------------------------------------------
    def publish_threadsafe(self, stream_id: str, items: list[tuple[int | None, str]]) -> None:
        """`items`: (snippet index or None for state messages, JSON text)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop closed between the check and the call (shutdown).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.publish, stream_id, items)

    def close_stream_threadsafe(self, stream_id: str) -> None:
        """`close_stream` from any thread (on the loop, after the messages already handed over)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._channels.pop(stream_id, None)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.close_stream, stream_id)

    # -- on the loop ---------------------------------------------------------------------------------------
    def publish(self, stream_id: str, items: list[tuple[int | None, str]]) -> None:
        channel = self._channels.get(stream_id)
        if channel is None:
            return  # stream removed meanwhile
        for index, text in items:
            if index is None:
                channel.state_text = text
            elif self.replay:
                channel.replay.append((index, text))
            for sub in list(channel.subscribers):
                self._offer(channel, sub, index, text)

    def _offer(self, channel: _Channel, sub: Subscriber, index: int | None, text: str) -> None:
        if sub.close_code is not None:
            return
        # Two places stay free for the drop notice and the close sentinel.
        if sub.queue.qsize() >= self.client_queue:
            resume = sub.last_index + 1 if sub.last_index >= 0 else None
            notice = NoticeMessage(
                code="dropped",
                message=f"client too slow: more than {self.client_queue} messages behind; reconnect with ?since=",
                resume_from=resume,
            ).model_dump_json()
            sub.end(CLOSE_TOO_SLOW, "client too slow", notice)
            channel.subscribers.discard(sub)
            self.dropped_clients += 1
            if self._on_drop is not None:
                self._on_drop()
            logger.info("stream %s: dropped a WebSocket client that fell behind", sub.stream_id)
            return
        sub.queue.put_nowait(text)
        if index is not None:
            sub.last_index = max(sub.last_index, index)

    def open_channel(self, stream_id: str) -> None:
        self._channel(stream_id)

    def subscribe(self, stream_id: str, since: int | None = None) -> Subscriber:
        """Register a client; with `since`, first queue the kept messages of snippets >= since (oldest first)."""
        channel = self._channel(stream_id)
        sub = Subscriber(stream_id, asyncio.Queue(maxsize=self.client_queue + 2))
        if channel.state_text is not None:
            sub.queue.put_nowait(channel.state_text)
        if since is not None:
            kept = [(i, t) for i, t in channel.replay if i >= since]
            oldest = channel.replay[0][0] if channel.replay else None
            if (oldest is not None and since < oldest) or len(kept) > self.client_queue - 2:
                kept = kept[-(self.client_queue - 2) :] if self.client_queue > 2 else []
                first = kept[0][0] if kept else None
                sub.queue.put_nowait(
                    NoticeMessage(
                        code="replay_gap",
                        message=f"snippets from {since} are no longer all kept; replay starts at {first}",
                        resume_from=first,
                    ).model_dump_json()
                )
            for index, text in kept:
                self._offer(channel, sub, index, text)
        channel.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        channel = self._channels.get(sub.stream_id)
        if channel is not None:
            channel.subscribers.discard(sub)

    def close_stream(self, stream_id: str) -> None:
        """The stream was removed: tell its clients, end their subscriptions, forget its messages."""
        channel = self._channels.pop(stream_id, None)
        if channel is None:
            return
        notice = NoticeMessage(
            code="stream_removed", message=f"stream {stream_id} was removed"
        ).model_dump_json()
        for sub in channel.subscribers:
            sub.end(CLOSE_STREAM_REMOVED, "stream removed", notice)

    def subscriber_count(self, stream_id: str) -> int:
        channel = self._channels.get(stream_id)
        return len(channel.subscribers) if channel else 0
