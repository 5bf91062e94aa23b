import sqlite3
import time

import numpy as np
import pytest

from model.events import EventPolicy
from service.live.events import EventFilter, LiveEventStore, StreamEvents
from service.storage import Database


def test_an_event_too_short_by_its_last_high_snippet_is_never_announced(tmp_path) -> None:
    store = LiveEventStore(Database(tmp_path / "db.sqlite"))
    policy = EventPolicy(enter_threshold=0.5, exit_threshold=0.4, min_duration_s=2.0, min_gap_s=3.0)
    events = StreamEvents("s", "cam", policy, ["A", "B"], store)
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
    events = StreamEvents("s", "cam", policy, ["A", "B"], store)
    kinds = []
    for i, score in enumerate([0.9, 0.8, 0.7, 0.1, 0.1]):
        kinds += [
            n.type for n in events.update(i, float(i), float(i + 1), time.time(), score, np.array([0.2, 0.8]))
        ]
    assert kinds == ["start", "end"]
    rows, total = store.query(EventFilter())
    assert total == 1 and rows[0]["status"] == "closed"


def _feed(
    events: StreamEvents, snippets: list[tuple[int, float]], outage: dict[int, float] | None = None
) -> list:
    """Snippets of 1 s each, (index, score); `outage` maps an index to the wall-clock outage just before it."""
    notices = []
    base = time.time()
    for index, score in snippets:
        notices += events.update(
            index,
            float(index),
            float(index + 1),
            base + index + 1,
            score,
            np.array([0.2, 0.8]),
            outage_s=(outage or {}).get(index, 0.0),
        )
    return notices


def _events(tmp_path, **policy) -> tuple[LiveEventStore, StreamEvents]:
    store = LiveEventStore(Database(tmp_path / "db.sqlite"))
    rules = EventPolicy(enter_threshold=0.5, exit_threshold=0.4, min_gap_s=2.0, **policy)
    return store, StreamEvents("s", "cam", rules, ["A", "B"], store)


def test_dropped_snippets_longer_than_the_exit_rules_are_never_bridged(tmp_path) -> None:
    store, events = _events(tmp_path)
    # Snippets 3-7 never arrive (5 s without scores, the exit rules wait 2 s): two events, not one.
    notices = _feed(
        events, [(0, 0.9), (1, 0.9), (2, 0.9), (8, 0.9), (9, 0.9), (10, 0.1), (11, 0.1), (12, 0.1)]
    )
    assert [(n.type, n.end_reason) for n in notices] == [
        ("start", None),
        ("end", "gap"),
        ("start", None),
        ("end", "scores_below_exit"),
    ]
    rows, total = store.query(EventFilter())
    assert total == 2
    first, second = sorted(rows, key=lambda r: r["start_s"])
    assert (first["start_s"], first["end_s"], first["end_reason"]) == (0.0, 3.0, "gap")
    assert (second["start_s"], second["end_s"], second["end_reason"]) == (8.0, 10.0, "scores_below_exit")
    # The first event ended with its last scored snippet (wall clock of snippet 2's end), not when the gap was seen.
    assert notices[1].ended_at == pytest.approx(notices[0].started_at + 3.0)


def test_an_outage_longer_than_the_exit_rules_is_never_bridged(tmp_path) -> None:
    _, events = _events(tmp_path)
    # Media time runs on (frames are counted), but the source was away 30 s before snippet 3.
    notices = _feed(events, [(0, 0.9), (1, 0.9), (2, 0.9), (3, 0.9), (4, 0.1), (5, 0.1), (6, 0.1)], {3: 30.0})
    assert [(n.type, n.end_reason) for n in notices] == [
        ("start", None),
        ("end", "gap"),
        ("start", None),
        ("end", "scores_below_exit"),
    ]


def test_a_gap_the_exit_rules_allow_is_bridged(tmp_path) -> None:
    store, events = _events(tmp_path)
    notices = _feed(events, [(0, 0.9), (1, 0.9), (3, 0.9), (4, 0.1), (5, 0.1), (6, 0.1)], {3: 0.5})
    assert [(n.type, n.end_reason) for n in notices] == [("start", None), ("end", "scores_below_exit")]
    rows, _ = store.query(EventFilter())
    assert (rows[0]["start_s"], rows[0]["end_s"]) == (0.0, 4.0)


def test_finish_closes_at_the_last_scored_high_snippet_with_its_reason(tmp_path) -> None:
    store, events = _events(tmp_path)
    notices = _feed(events, [(0, 0.9), (1, 0.9), (2, 0.3)])
    assert events.active
    end = events.finish("source_lost", through_index=3)
    assert end is not None and end.type == "end" and end.end_reason == "source_lost"
    assert end.end_s == 2.0 and end.ended_at == pytest.approx(notices[0].started_at + 2.0)
    assert not events.active
    # Snippet 3's final score arrives late (with the first snippet after the outage): it opens nothing.
    assert _feed(events, [(3, 0.9)]) == []
    rows, total = store.query(EventFilter())
    assert total == 1 and rows[0]["status"] == "closed" and rows[0]["end_reason"] == "source_lost"
    assert rows[0]["end_s"] == 2.0
    # Scoring goes on after the outage: a new event may open.
    assert [n.type for n in _feed(events, [(4, 0.9), (5, 0.9)])] == ["start"]


def test_finish_of_an_event_too_short_to_announce_stores_nothing(tmp_path) -> None:
    store, events = _events(tmp_path, min_duration_s=5.0)
    assert _feed(events, [(0, 0.9), (1, 0.9)]) == []
    assert events.finish("stream_ended", through_index=2) is None
    assert store.query(EventFilter())[1] == 0


def test_a_database_from_before_end_reasons_is_migrated(tmp_path) -> None:
    path = tmp_path / "old.sqlite"
    # The schema as released before end reasons, written as that release did.
    with sqlite3.connect(path) as old:
        old.executescript(
            """
            PRAGMA journal_mode=WAL;
            CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL);
            CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, source_kind TEXT NOT NULL,
                source_id TEXT NOT NULL, start_s REAL NOT NULL, end_s REAL, peak_score REAL NOT NULL,
                mean_score REAL, dominant_category TEXT, categories_json TEXT NOT NULL DEFAULT '{}',
                created_at REAL NOT NULL, started_at REAL, ended_at REAL,
                status TEXT NOT NULL DEFAULT 'closed');
            INSERT INTO schema_migrations VALUES ('events_v1', 1), ('events_live_v1', 2);
            INSERT INTO events (source_kind, source_id, start_s, end_s, peak_score, created_at, started_at,
                ended_at, status) VALUES ('stream', 's', 0, 3, 0.9, 1, 1, 4, 'closed');
            INSERT INTO events (source_kind, source_id, start_s, peak_score, created_at, started_at, status)
                VALUES ('stream', 's', 5, 0.8, 6, 6, 'open');
            """
        )
    old.close()
    store = LiveEventStore(Database(path))
    assert store.mark_interrupted() == 1
    rows, total = store.query(EventFilter())
    assert total == 2
    by_start = {r["start_s"]: r for r in rows}
    assert by_start[0.0]["status"] == "closed" and by_start[0.0]["end_reason"] is None
    assert by_start[5.0]["status"] == "interrupted" and by_start[5.0]["end_reason"] == "service_interrupted"
    LiveEventStore(store.db)  # a second start applies nothing again


def _handover_pair(tmp_path, first_scores: list[float]):
    """A first worker opens an event and is lost; returns (store, policy, wall clock of its last snippet's end)."""
    store = LiveEventStore(Database(tmp_path / "db.sqlite"))
    policy = EventPolicy(enter_threshold=0.5, exit_threshold=0.4, min_gap_s=2.0)
    first = StreamEvents("s", "cam", policy, ["A", "B"], store)
    base = time.time() - len(first_scores) - 5.0
    for i, score in enumerate(first_scores):
        first.update(i, float(i), float(i + 1), base + i + 1, score, np.array([0.2, 0.8]))
    return store, policy, base + len(first_scores)


def test_a_handed_over_event_continues_under_its_id_in_its_first_clock(tmp_path) -> None:
    store, policy, last_at = _handover_pair(tmp_path, [0.1, 0.9, 0.7])
    [opened] = store.query(EventFilter(status="open"))[0]
    continued, interrupted = store.take_over(["s"])
    assert interrupted == 0 and continued["s"]["id"] == opened["id"]
    # The second worker's clock starts at 0, 5 s later (the handover): its snippets continue the event.
    second = StreamEvents("s", "cam", policy, ["A", "B"], store, handover=continued["s"])
    notices = []
    for k, score in enumerate([0.95, 0.8, 0.1, 0.1, 0.1]):
        notices += second.update(
            10 + k, float(k), float(k + 1), last_at + 5 + k + 1, score, np.array([0.6, 0.4])
        )
    assert [n.type for n in notices] == ["update", "end"]
    end = notices[-1]
    assert end.event_id == opened["id"] and end.end_reason == "scores_below_exit"
    # Media times in the first worker's clock: it began at 1 s, its last high snippet ended 5 + 2 s after 3 s.
    assert end.start_s == pytest.approx(1.0) and end.end_s == pytest.approx(10.0)
    assert end.ended_at == pytest.approx(last_at + 7.0)
    assert end.peak_score == pytest.approx(0.95) and notices[0].peak_s == pytest.approx(8.0)
    # Mean and categories count both workers' high snippets: 0.9, 0.7 (A 0.2) then 0.95, 0.8 (A 0.6).
    row = store.get(opened["id"])
    assert row["status"] == "closed" and row["mean_score"] == pytest.approx((0.9 + 0.7 + 0.95 + 0.8) / 4)
    assert row["categories"]["A"] == pytest.approx(0.4) and "handover_json" not in row
    assert store.query(EventFilter())[1] == 1  # one event, not two


def test_a_handed_over_event_with_low_scores_ends_at_its_last_high_snippet(tmp_path) -> None:
    store, policy, last_at = _handover_pair(tmp_path, [0.9, 0.8])
    continued, _ = store.take_over(["s"])
    second = StreamEvents("s", "cam", policy, ["A", "B"], store, handover=continued["s"])
    notices = []
    for k in range(3):
        notices += second.update(
            10 + k, float(k), float(k + 1), last_at + 4 + k + 1, 0.1, np.array([0.5, 0.5])
        )
    [end] = notices
    assert end.end_s == pytest.approx(2.0) and end.ended_at == pytest.approx(last_at)


def test_stale_or_stateless_open_events_are_marked_interrupted_on_take_over(tmp_path) -> None:
    store, _, last_at = _handover_pair(tmp_path, [0.9, 0.8])
    continued, interrupted = store.take_over(["s"], now=last_at + 31.0)  # older than HANDOVER_MAX_S
    assert continued == {} and interrupted == 1
    assert store.query(EventFilter())[0][0]["status"] == "interrupted"
    stateless = store.open("t", 0.0, time.time(), 0.9)  # e.g. left by a release that stored no state
    assert store.take_over(["t"]) == ({}, 1) and store.get(stateless)["status"] == "interrupted"
