"""Live worker placement (one per node) and stream balance: the planning rules, and `rebalance` on a real
database (the embedded SQLite one; the cluster tests run it on PostgreSQL)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.cluster.placement import balance_moves, doubled, plan, rebalance
from service.live.events import LiveEventStore
from service.live.schemas import EventPolicyOverrides
from service.live.store import StreamRecord, StreamStore
from service.storage import Database


def test_unplaced_workers_get_free_nodes_in_order_and_extras_wait() -> None:
    assert plan([None, None], ["a", "b", "c"]) == {0: "a", 1: "b"}
    # A worker keeps its node; the lost one gets a node hosting none (never its survivor's).
    assert plan(["a", None], ["a", "b"]) == {1: "b"}
    assert plan([None, "a"], ["a", "b"]) == {0: "b"}
    # Fewer nodes than workers: one per node, the rest get none (they wait for a node to join).
    assert plan([None, None, None], ["a"]) == {0: "a"}
    assert plan(["a", None], ["a"]) == {}
    assert plan(["a", "b"], ["a", "b", "c"]) == {}
    assert plan([None], []) == {}


def test_two_workers_on_one_node_are_found() -> None:
    assert doubled(["a", "b"]) == []
    assert doubled(["a", "a", None, "a", "b"]) == [1, 3]
    assert doubled([None, None]) == []


@pytest.mark.parametrize(
    ("counts", "serving", "moves"),
    [
        ({0: 4}, [0, 1], [(0, 1), (0, 1)]),
        ({0: 5}, [0, 1], [(0, 1), (0, 1)]),
        ({0: 3, 1: 2}, [0, 1], []),
        ({0: 6, 1: 0, 2: 0}, [0, 1, 2], [(0, 1), (0, 2), (0, 1), (0, 2)]),
        ({0: 4, 1: 0}, [0], []),  # one worker up: nothing to balance
        ({0: 4, 1: 0}, [0, 2], [(0, 2), (0, 2)]),  # a worker not up gets nothing
    ],
)
def test_balance_moves_from_the_most_to_the_least_loaded(
    counts: dict[int, int], serving: list[int], moves: list[tuple[int, int]]
) -> None:
    assert balance_moves(counts, serving) == moves


def _register(store: StreamStore, name: str, worker: int) -> StreamRecord:
    record = StreamRecord(
        id=name, name=name, url="rtsp://127.0.0.1/x", events=EventPolicyOverrides(), loop=False,
        created_at=time.time(), worker=worker,
    )  # fmt: skip
    store.add(record)
    return record


def test_rebalance_moves_streams_without_an_open_event_first(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    store, events = StreamStore(db), LiveEventStore(db)
    for name in ("s0", "s1", "s2", "s3", "s4"):
        _register(store, name, worker=0)
    # The two newest streams have open events: they stay with their worker if others can move instead.
    events.open("s3", 1.0, time.time(), 0.9)
    events.open("s4", 1.0, time.time(), 0.9)

    moves = rebalance(db, [0, 1])
    assert [(m.old, m.new) for m in moves] == [(0, 1), (0, 1)]
    assert {m.stream_id for m in moves} == {"s1", "s2"}  # the newest of those with no open event
    assert {r.id: r.worker for r in store.all()} == {"s0": 0, "s1": 1, "s2": 1, "s3": 0, "s4": 0}
    # Balanced now: a second replica finds nothing to move.
    assert rebalance(db, [0, 1]) == []
    # A worker not up takes nothing; one worker alone has nothing to balance with.
    assert rebalance(db, [0]) == []
    _register(store, "s5", worker=0)
    _register(store, "s6", worker=0)
    assert [(m.stream_id, m.new) for m in rebalance(db, [0, 1])] == [("s6", 1)]
