"""The cluster's shared live state, on both backends: stream assignment to live workers, the message log a
worker writes (numbering going on after a restart), and the relay that feeds an API replica's WebSocket hub."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.cluster.live_worker import RecordingHub
from service.cluster.messages import MessageLog, StoredMessage
from service.cluster.streams import RelayHub
from service.live.schemas import EventPolicyOverrides
from service.live.store import StreamRecord, StreamStore
from service.storage import Database


@pytest.fixture
def db(database_target: str | Path) -> Iterator[Database]:
    database = Database(database_target)
    yield database
    database.close()


def _record(name: str) -> StreamRecord:
    return StreamRecord(
        id=name,
        name=name,
        url="rtsp://127.0.0.1/cam",
        events=EventPolicyOverrides(),
        loop=False,
        created_at=time.time(),
    )


def _snippet(index: int, status: str = "final") -> str:
    return json.dumps({"type": "snippet", "index": index, "status": status})


def test_new_streams_go_to_the_least_loaded_worker(db: Database) -> None:
    store = StreamStore(db)
    assigned = [store.add_to_least_loaded(_record(f"s{i}"), workers=[0, 1]).worker for i in range(5)]
    assert assigned == [0, 1, 0, 1, 0]
    assert store.delete("s0") and store.delete("s2")
    assert store.add_to_least_loaded(_record("s5"), workers=[0, 1]).worker == 0
    assert [r.id for r in store.of_worker(1)] == ["s1", "s3"]
    assert store.get("s5").worker == 0 and store.get("missing") is None
    store.add(_record("single"))  # a single node's registration has no worker
    assert store.get("single").worker is None


def test_a_lost_workers_streams_move_to_the_least_loaded_survivors(db: Database) -> None:
    store = StreamStore(db)
    for i in range(7):
        store.add_to_least_loaded(_record(f"s{i}"), workers=[0, 1, 2])  # 0: s0 s3 s6, 1: s1 s4, 2: s2 s5
    assert store.add_to_least_loaded(_record("s7"), workers=[1, 2]).worker == 1  # only the serving ones
    assert store.count_of_workers([0]) == 3 and store.count_of_workers([1, 2]) == 5
    moved = store.reassign(lost=[0], survivors=[1, 2])
    # One by one to the least loaded: 2 (2 streams) gets s0, then 1 and 2 tie at 3 and the lower index wins.
    assert [(r.id, r.worker) for r in moved] == [("s0", 2), ("s3", 1), ("s6", 2)]
    assert store.count_of_workers([0]) == 0 and store.reassign(lost=[0], survivors=[1, 2]) == []
    assert store.reassign(lost=[1], survivors=[]) == []  # nowhere to go: left where they are


def test_replicas_reassigning_at_once_move_each_stream_once(
    db: Database, database_target: str | Path
) -> None:
    store = StreamStore(db)
    for i in range(40):
        store.add_to_least_loaded(_record(f"s{i:02d}"), workers=[0, 1])
    others = [Database(database_target) for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(others)) as pool:
            results = list(pool.map(lambda d: StreamStore(d).reassign([1], [0, 2]), others))
    finally:
        for other in others:
            other.close()
    moved = [record.id for result in results for record in result]
    assert sorted(moved) == [f"s{i:02d}" for i in range(1, 40, 2)]  # every one of worker 1's, once
    assert sum(1 for result in results if result) == 1  # one replica moved them all; the others found none
    assert store.count_of_workers([0]) == 20 and store.count_of_workers([2]) == 20  # evened out


def test_a_worker_stores_messages_only_of_streams_it_owns(db: Database) -> None:
    store, log = StreamStore(db), MessageLog(db)
    store.add_to_least_loaded(_record("a"), workers=[0])
    store.add_to_least_loaded(_record("b"), workers=[1])
    dropped = log.append(
        [StoredMessage("a", 0, 0, _snippet(0)), StoredMessage("b", 0, 0, _snippet(0))], time.time(), owner=0
    )
    assert dropped == {"b"} and log.next_seq("a") == 1 and log.next_seq("b") == 0
    store.reassign(lost=[0], survivors=[1])
    # The old owner (presumed dead, or a late restart) writes nothing more; the new one numbers on.
    assert log.append([StoredMessage("a", 1, 1, _snippet(1))], time.time(), owner=0) == {"a"}
    assert log.append([StoredMessage("a", 1, 1, _snippet(1))], time.time(), owner=1) == set()
    assert [m.seq for m in log.latest("a", 10)] == [0, 1]


def test_message_log_numbers_prunes_and_reads_after_cursors(db: Database) -> None:
    log = MessageLog(db)
    assert log.next_seq("a") == 0 and log.next_snippet("a") == 0
    log.append([StoredMessage("a", i, i // 2, _snippet(i // 2)) for i in range(10)], time.time())
    log.append([StoredMessage("b", 0, None, '{"type": "state"}')], time.time())
    assert log.next_seq("a") == 10 and log.next_snippet("a") == 5 and log.next_snippet("b") == 0
    assert [m.seq for m in log.latest("a", 3)] == [7, 8, 9]
    after = log.after({"a": 7, "b": -1})
    assert [(m.stream_id, m.seq) for m in after] == [("a", 8), ("a", 9), ("b", 0)]
    assert log.prune("a", keep=4) == 6
    assert [m.seq for m in log.latest("a", 100)] == [6, 7, 8, 9]
    log.delete_stream("a")
    assert log.latest("a", 10) == [] and log.next_seq("a") == 0


def test_a_restarted_worker_goes_on_numbering_where_the_store_is(db: Database) -> None:
    log = MessageLog(db)
    first = RecordingHub(log, keep=100)
    first.publish_threadsafe("s", [(0, _snippet(0, "provisional")), (None, '{"type": "state"}')])
    first.publish_threadsafe("s", [(0, _snippet(0)), (1, _snippet(1, "provisional"))])
    deadline = time.monotonic() + 10
    while log.next_seq("s") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.stop()
    again = RecordingHub(MessageLog(db), keep=100)  # a new incarnation, nothing in memory
    again.publish_threadsafe("s", [(1, _snippet(1)), (2, _snippet(2, "provisional"))])
    while log.next_seq("s") < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    again.stop()
    stored = log.latest("s", 100)
    assert [m.seq for m in stored] == list(range(6))
    assert [m.snippet_index for m in stored] == [0, None, 0, 1, 1, 2]
    assert log.next_snippet("s") == 3


def test_relay_replays_since_and_follows_without_duplicates(db: Database) -> None:
    log = MessageLog(db)
    log.append([StoredMessage("s", i, i, _snippet(i)) for i in range(5)], time.time())

    async def scenario() -> tuple[list[int], list[int]]:
        hub = RelayHub(log, client_queue=64, replay=16)
        hub.bind(asyncio.get_running_loop())
        sub = hub.subscribe("s", since=2)
        replayed = [json.loads(sub.queue.get_nowait())["index"] for _ in range(3)]
        log.append([StoredMessage("s", i, i, _snippet(i)) for i in range(5, 8)], time.time())
        assert hub.follow_once() == 3
        assert hub.follow_once() == 0  # nothing new: nothing published twice
        followed = [json.loads(sub.queue.get_nowait())["index"] for _ in range(3)]
        assert sub.queue.empty()
        late = hub.subscribe("s", since=6)  # a second client on the same replica: from the hub's replay
        assert [json.loads(late.queue.get_nowait())["index"] for _ in range(2)] == [6, 7]
        return replayed, followed

    replayed, followed = asyncio.run(scenario())
    assert replayed == [2, 3, 4] and followed == [5, 6, 7]
