"""The dispatcher: every publisher gets every message, a failing one harms neither the others nor the caller, and
a removed stream's late scores go nowhere while its closing event still does."""

from __future__ import annotations

from service.live.messages import EventNotice, StateMessage
from service.publishers.base import (
    EventChanged,
    Outgoing,
    Publisher,
    SnippetsScored,
    StateChanged,
    StreamRemoved,
)
from service.publishers.dispatcher import Dispatcher


class Recorder(Publisher):
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[Outgoing] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def publish(self, message: Outgoing) -> None:
        self.got.append(message)


class Broken(Recorder):
    def publish(self, message: Outgoing) -> None:
        raise OSError("disk on fire")

    def stop(self) -> None:
        raise OSError("still on fire")


def test_every_publisher_gets_every_message_and_failures_stay_contained() -> None:
    failures: list[str] = []
    dispatcher = Dispatcher(on_error=failures.append)
    first, broken, last = Recorder("first"), Broken("broken"), Recorder("last")
    for publisher in (first, broken, last):
        dispatcher.add(publisher)
    dispatcher.start()
    state = StateMessage(stream_id="s", state="live", wall_clock=0.0)
    messages = [
        StateChanged("s", "cam", state, state.model_dump_json()),
        SnippetsScored("s", "cam", [(0, "{}")], None),
    ]
    for message in messages:
        dispatcher.publish(message)
    assert first.got == messages and last.got == messages
    assert failures == ["broken", "broken"] and dispatcher.errors == 2
    dispatcher.stop()  # the broken one's failure to stop does not keep the others running
    assert first.started and first.stopped and last.stopped


def test_a_removed_streams_late_scores_are_dropped_but_its_closing_event_is_not() -> None:
    dispatcher = Dispatcher()
    sink = Recorder("sink")
    dispatcher.add(sink)
    end = EventNotice(type="end", event_id=3, start_s=0.0, end_s=1.0, started_at=0.0, peak_score=0.7)
    dispatcher.publish(StreamRemoved("s"))
    dispatcher.publish(SnippetsScored("s", "cam", [(5, "{}")], None))  # a snippet that was in flight
    dispatcher.publish(EventChanged("s", "cam", end))
    dispatcher.publish(SnippetsScored("other", "cam 2", [(1, "{}")], None))
    assert [type(m).__name__ for m in sink.got] == ["StreamRemoved", "EventChanged", "SnippetsScored"]
    # The memory of removed streams is bounded.
    for i in range(5000):
        dispatcher.publish(StreamRemoved(f"gone-{i}"))
    assert len(dispatcher._removed) <= 1024
