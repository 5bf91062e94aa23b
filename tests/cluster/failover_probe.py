"""What the node-kill test and `bench.cluster_failover` read from a cluster: the live workers' states and nodes
(from Ray's GCS, through a driver), the streams' assignments, messages and events (from PostgreSQL), the time
from a kill to the first scored snippet of every moved stream, and checks that nothing stored was lost or stored
twice across a handover."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import psycopg

from tests.ray_cluster import RayCluster


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    snippet_index: int | None
    status: str | None
    created_at: float


def workers(cluster: RayCluster, count: int = 2) -> dict[int, dict]:
    """Each live worker's state and node as Ray's GCS has them (`{"state": "NOT_PLACED"}` without an actor)."""
    result = cluster.driver(
        "from ray._private import state\n"
        "result = {}\n"
        f"for i in range({count}):\n"
        "    try:\n"
        "        info = state.actors(ray.get_actor(f'live-worker-{i}')._actor_id.hex())\n"
        "        result[i] = {'state': info['State'], 'node': info['Address']['NodeID']}\n"
        "    except ValueError:\n"
        "        result[i] = {'state': 'NOT_PLACED', 'node': None}\n"
    )
    assert isinstance(result, dict)
    return {int(index): info for index, info in result.items()}


def assigned(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT id, worker FROM streams").fetchall())


def messages(database_url: str) -> dict[str, list[Message]]:
    """Every stored live message by stream, in `seq` order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT stream_id, seq, snippet_index, text, created_at FROM live_messages ORDER BY stream_id, seq"
        ).fetchall()
    found: dict[str, list[Message]] = {}
    for stream_id, seq, index, text, created_at in rows:
        status = json.loads(text).get("status") if index is not None else None
        found.setdefault(stream_id, []).append(Message(int(seq), index, status, float(created_at)))
    return found


def stream_events(database_url: str) -> list[tuple]:
    """(id, stream, start_s, status) of every live event."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, source_id, start_s, status FROM events WHERE source_kind = 'stream' ORDER BY id"
        ).fetchall()


@dataclass
class Resumed:
    """When each moved stream was scored again after a kill, in seconds after it: its first scored snippet
    (provisional or final) and its first final one."""

    scored_s: dict[str, float]
    final_s: dict[str, float]


def wait_resumed(database_url: str, last_index: dict[str, int], killed_at: float, timeout: float) -> Resumed:
    """Until every stream in `last_index` has a final score for a snippet past its index there (stored after
    `killed_at`, a `time.time()`); times from the messages' stored `created_at` (the writer's clock)."""
    deadline = time.monotonic() + timeout
    while True:
        stored = messages(database_url)
        scored, final = {}, {}
        for stream_id, last in last_index.items():
            new = [
                m
                for m in stored.get(stream_id, [])
                if m.snippet_index is not None and m.snippet_index > last and m.status is not None
            ]
            if new:
                scored[stream_id] = min(m.created_at for m in new) - killed_at
            finals = [m.created_at for m in new if m.status == "final"]
            if finals:
                final[stream_id] = min(finals) - killed_at
        if len(final) == len(last_index):
            return Resumed(scored, final)
        if time.monotonic() > deadline:
            missing = sorted(set(last_index) - set(final))
            raise AssertionError(f"streams {missing} not scored again {timeout}s after the kill")
        time.sleep(0.1)


def last_indices(database_url: str, stream_ids: list[str]) -> dict[str, int]:
    stored = messages(database_url)
    return {
        sid: max((m.snippet_index for m in stored.get(sid, []) if m.snippet_index is not None), default=-1)
        for sid in stream_ids
    }


def spread_back(database_url: str, worker: int, since: float) -> bool:
    """Whether the streams are spread over the workers within one of each other, `worker` runs some, and each of
    those has a final score stored after `since` (a `time.time()`)."""
    now = assigned(database_url)
    counts: dict[int, int] = {}
    for owner in now.values():
        counts[owner] = counts.get(owner, 0) + 1
    back = [sid for sid, owner in now.items() if owner == worker]
    if not back or max(counts.values()) - counts[worker] > 1:
        return False
    stored = messages(database_url)
    return all(any(m.status == "final" and m.created_at > since for m in stored.get(sid, [])) for sid in back)


def integrity_problems(
    before: dict[str, list[Message]],
    after: dict[str, list[Message]],
    events_before: list[tuple],
    events_after: list[tuple],
) -> list[str]:
    """What a handover must not do to the store, as readable problems (none: all kept, nothing twice): a message
    stored before is gone or changed, a stream's `seq` numbers have a gap, a snippet has two scores of one status,
    an event stored before is gone, or one (stream, start) has two events. Needs pruning off (a large
    `LIVE_REPLAY`)."""
    problems = []
    for stream_id, kept in before.items():
        now = {m.seq: m for m in after.get(stream_id, [])}
        gone = [m.seq for m in kept if now.get(m.seq) != m]
        if gone:
            problems.append(
                f"stream {stream_id}: {len(gone)} stored messages lost or changed (seq {gone[:5]})"
            )
    for stream_id, stored in after.items():
        seqs = [m.seq for m in stored]
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            problems.append(f"stream {stream_id}: seq numbers have gaps")
        scored = [(m.snippet_index, m.status) for m in stored if m.status is not None]
        if len(scored) != len(set(scored)):
            twice = sorted({s for s in scored if scored.count(s) > 1})
            problems.append(f"stream {stream_id}: snippets scored twice {twice[:5]}")
    after_ids = {row[0] for row in events_after}
    if lost := [row[0] for row in events_before if row[0] not in after_ids]:
        problems.append(f"events lost: {lost}")
    starts = [(row[1], row[2]) for row in events_after]
    if len(starts) != len(set(starts)):
        problems.append("an event was stored twice")
    return problems
