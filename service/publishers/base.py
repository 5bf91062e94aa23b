"""The publisher interface and the messages the live pipeline hands to it.

A `Publisher` receives every `Outgoing` message from the scheduler thread (or the event loop, for `StreamRemoved`)
and must return at once: a sink that does real work (network, disk) queues the message for its own thread, so a
slow or dead sink never slows the pipeline. Publishers pick the message types they care about and ignore the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.live.messages import EventNotice, SnippetMessage, StateMessage


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A stream's reader changed state (`text`: the message as sent to WebSocket clients)."""

    stream_id: str
    stream_name: str
    message: StateMessage
    text: str


@dataclass(frozen=True, slots=True)
class SnippetsScored:
    """One scheduler cycle's messages of one stream: (snippet index, serialised JSON) for WebSocket clients, and
    the snippet that got its final score in this cycle, if any."""

    stream_id: str
    stream_name: str
    items: list[tuple[int, str]]
    final: SnippetMessage | None


@dataclass(frozen=True, slots=True)
class EventChanged:
    """An announced live event started, reached a new peak (`update`) or ended.

    `standalone_index`: set when no snippet message carries the notice (an event closed because its stream
    stopped, stalled or lost its source): the last scored snippet's index, where it was closed.
    """

    stream_id: str
    stream_name: str
    notice: EventNotice
    standalone_index: int | None = None


@dataclass(frozen=True, slots=True)
class StreamRemoved:
    stream_id: str


Outgoing = StateChanged | SnippetsScored | EventChanged | StreamRemoved


class Publisher:
    """A sink of live results. `publish` must not block; `start`/`stop` bracket the service's lifetime."""

    name = "publisher"

    def start(self) -> None:
        """Called once when the service starts (before any message)."""

    def stop(self) -> None:
        """Called once when the service stops; flush what can be flushed quickly, then return."""

    def publish(self, message: Outgoing) -> None:
        raise NotImplementedError
