"""The dispatcher: owns the publishers, starts and stops them, and hands each of them every message.

A publisher that raises is logged and counted; the others still get the message, and the pipeline carries on.
Scores and states of a stream that was just removed (the scheduler may finish a snippet already in flight) are not
passed on, so no sink sees a stream come back after its removal; its closing event notice still is.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from service.publishers.base import Outgoing, Publisher, SnippetsScored, StateChanged, StreamRemoved

logger = logging.getLogger(__name__)

REMEMBER_REMOVED = 1024  # recently removed stream ids kept (bounded: streams come and go forever)


class Dispatcher:
    def __init__(self, on_error: Callable[[str], None] | None = None) -> None:
        self._publishers: list[Publisher] = []
        self._on_error = on_error
        self._removed: OrderedDict[str, None] = OrderedDict()
        self._removed_lock = threading.Lock()  # the scheduler thread and the event loop both publish
        self.errors = 0

    def add(self, publisher: Publisher) -> None:
        self._publishers.append(publisher)

    @property
    def publishers(self) -> list[Publisher]:
        return list(self._publishers)

    def start(self) -> None:
        for publisher in self._publishers:
            publisher.start()

    def stop(self) -> None:
        for publisher in reversed(self._publishers):
            try:
                publisher.stop()
            except Exception:
                logger.exception("publisher %s failed to stop cleanly", publisher.name)

    def readmit(self, stream_id: str) -> None:
        """A removed stream runs here again (a cluster worker given back a stream it ran before): its scores and
        states are passed on again."""
        with self._removed_lock:
            self._removed.pop(stream_id, None)

    def publish(self, message: Outgoing) -> None:
        with self._removed_lock:
            if isinstance(message, StreamRemoved):
                self._removed[message.stream_id] = None
                while len(self._removed) > REMEMBER_REMOVED:
                    self._removed.popitem(last=False)
            elif isinstance(message, SnippetsScored | StateChanged) and message.stream_id in self._removed:
                return
        for publisher in self._publishers:
            try:
                publisher.publish(message)
            except Exception:
                self.errors += 1
                if self._on_error is not None:
                    self._on_error(publisher.name)
                logger.exception(
                    "publisher %s failed on a %s message", publisher.name, type(message).__name__
                )
