"""The WebSocket publisher: hands serialised snippet and state messages to the live hub (which runs on the event
loop), sends an `event` message for an event end no snippet carries, and ends a removed stream's subscriptions."""

from __future__ import annotations

import time

from service.live.hub import LiveHub
from service.live.messages import EventMessage
from service.publishers.base import (
    EventChanged,
    Outgoing,
    Publisher,
    SnippetsScored,
    StateChanged,
    StreamRemoved,
)


class WebSocketPublisher(Publisher):
    name = "websocket"

    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub

    def publish(self, message: Outgoing) -> None:
        if isinstance(message, SnippetsScored):
            self.hub.publish_threadsafe(message.stream_id, list(message.items))
        elif isinstance(message, StateChanged):
            self.hub.publish_threadsafe(message.stream_id, [(None, message.text)])
        elif isinstance(message, EventChanged) and message.standalone_index is not None:
            index = message.standalone_index
            text = EventMessage(
                stream_id=message.stream_id, index=index, event=message.notice, wall_clock=time.time()
            ).model_dump_json()
            self.hub.publish_threadsafe(message.stream_id, [(index, text)])
        elif isinstance(message, StreamRemoved):
            self.hub.close_stream_threadsafe(message.stream_id)
