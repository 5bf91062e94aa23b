import time

import numpy as np

from model.events import EventPolicy
from service.live.events import EventFilter, LiveEventStore, StreamEvents
from service.storage import Database


def test_an_event_too_short_by_its_last_high_snippet_is_never_announced(tmp_path) -> None:
    store = LiveEventStore(Database(tmp_path / "db.sqlite"))
    policy = EventPolicy(enter_threshold=0.5, exit_threshold=0.4, min_duration_s=2.0, min_gap_s=3.0)
    events = StreamEvents("s", "cam", policy, ["A", "B"], store, None)
    notices = []
    # One high snippet (1 s) then low ones: the trailing low snippets must not make it look 2 s long.
    for i, score in enumerate([0.9, 0.1, 0.1, 0.1, 0.1, 0.1]):
        notices += events.update(i, float(i), float(i + 1), time.time(), score, np.array([0.5, 0.5]))
    assert notices == []
    rows, total = store.query(EventFilter())
    assert total == 0 and rows == []


def test_a_long_enough_event_is_announced_and_closed(tmp_path) -> None:
    store = LiveEventStore(Database(tmp_path / "db.sqlite"))
    policy = EventPolicy(enter_threshold=0.5, exit_threshold=0.4, min_duration_s=2.0, min_gap_s=1.0)
    events = StreamEvents("s", "cam", policy, ["A", "B"], store, None)
    kinds = []
    for i, score in enumerate([0.9, 0.8, 0.7, 0.1, 0.1]):
        kinds += [
            n.type for n in events.update(i, float(i), float(i + 1), time.time(), score, np.array([0.2, 0.8]))
        ]
    assert kinds == ["start", "end"]
    rows, total = store.query(EventFilter())
    assert total == 1 and rows[0]["status"] == "closed"
