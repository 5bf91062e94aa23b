"""Where the live workers run and which streams each one runs.

Placement: every live worker is a named, detached Ray actor pinned to a node of its own (Ray's
`NodeAffinitySchedulingStrategy`, `soft=False`), chosen by the API replicas: a worker with no node gets an alive
node that can host one (its GPU share fits) and hosts no other worker. So the workers are strictly one per node
whatever the nodes' GPU counts. With fewer such nodes than workers, the extra workers are not created at all (state
`NOT_PLACED`) until a node joins; the placed ones run every stream meanwhile. A worker whose process dies is
restarted by Ray on its own node (`max_restarts=-1`); one whose node dies cannot be restarted there, so Ray marks
it `DEAD` at once (which is what makes a handover fast: no restart is waited for), and it is created again, empty,
on the next free node that joins.

Balance: streams are kept spread over the workers that are up, within one stream of each other, so when a node
joins (and its new worker is up) streams move back to it; streams with no open event move first.

Several API replicas do all of this at once, each from its own view of Ray: creating a named actor is atomic
(`get_if_exists`), a replica does not place while another replica's new worker has no node yet, and two workers
that still end up on one node (replicas that saw different nodes) are separated by stopping the second one, whose
streams then fail over like those of any lost worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray
import sqlalchemy as sa
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from service.cluster.live_worker import LiveWorker
from service.cluster.runtime import LIVE_WORKER_GPUS, NAMESPACE, READS_GROUP, gpu_share
from service.cluster.scenes import SCENES_GROUP
from service.live.events import SOURCE_KIND
from service.live.store import STREAMS, move_stream
from service.settings import ServiceSettings
from service.storage import EVENTS, Database

logger = logging.getLogger(__name__)

# A worker that has no actor because no free node can host it (fewer nodes than workers).
NOT_PLACED = "NOT_PLACED"
# Ray's placeholder node id of an actor not yet scheduled (state DEPENDENCIES_UNREADY).
_NO_NODE = "f" * 56


def worker_name(index: int) -> str:
    return f"live-worker-{index}"


def plan(pinned: Sequence[str | None], nodes: Sequence[str]) -> dict[int, str]:
    """Nodes for the workers that have none: `pinned[i]` is the node worker `i` is pinned to (None: it has no
    actor), `nodes` the alive nodes that can host a worker, in order of preference. Each unpinned worker, in index
    order, gets the first node hosting no worker; those left over get none. Returns {worker: node}."""
    taken = {node for node in pinned if node is not None}
    free = [node for node in nodes if node not in taken]
    return {index: free.pop(0) for index, node in enumerate(pinned) if node is None and free}


def doubled(pinned: Sequence[str | None]) -> list[int]:
    """Workers pinned to a node that a worker of lower index is pinned to too."""
    seen: set[str] = set()
    found = []
    for index, node in enumerate(pinned):
        if node is None:
            continue
        if node in seen:
            found.append(index)
        seen.add(node)
    return found


def balance_moves(counts: dict[int, int], serving: Sequence[int]) -> list[tuple[int, int]]:
    """The (from, to) worker moves, one stream each, that bring the `serving` workers' stream counts within one
    of each other: always from the most to the least loaded (ties by index)."""
    if len(serving) < 2:
        return []
    load = {worker: counts.get(worker, 0) for worker in serving}
    moves = []
    while True:
        top = max(serving, key=lambda w: (load[w], -w))
        low = min(serving, key=lambda w: (load[w], w))
        if load[top] - load[low] <= 1:
            return moves
        moves.append((top, low))
        load[top] -= 1
        load[low] += 1


@dataclass(frozen=True, slots=True)
class Move:
    stream_id: str
    old: int
    new: int


def rebalance(db: Database, serving: Sequence[int]) -> list[Move]:
    """Move streams between the `serving` workers (those up) until their counts are within one of each other;
    each move is conditional on the stream still being where it was read. Streams with no open live event move
    first (a moved stream's open event is closed as interrupted by its new worker), then the newest. Takes the
    table lock of every assignment (`StreamStore.add_to_least_loaded`, `reassign`), so replicas decide one at
    a time. Returns the moves made."""
    if len(serving) < 2:
        return []
    # A read without the lock first: balanced is the usual case, and every replica asks several times a second.
    counted = db.query(
        sa.select(STREAMS.c.worker, sa.func.count())
        .where(STREAMS.c.worker.in_(list(serving)))
        .group_by(STREAMS.c.worker)
    )
    if not balance_moves({int(worker): int(n) for worker, n in counted}, serving):
        return []
    made: list[Move] = []
    with db.transaction() as conn:
        if db.dialect == "postgresql":
            conn.execute(sa.text("LOCK TABLE streams IN SHARE ROW EXCLUSIVE MODE"))
        rows = conn.execute(
            sa.select(STREAMS.c.id, STREAMS.c.worker, STREAMS.c.created_at).where(
                STREAMS.c.worker.in_(list(serving))
            )
        ).all()
        counts: dict[int, int] = {}
        for row in rows:
            counts[row.worker] = counts.get(row.worker, 0) + 1
        moves = balance_moves(counts, serving)
        if not moves:
            return []
        busy = set(
            conn.execute(
                sa.select(EVENTS.c.source_id).where(
                    EVENTS.c.source_kind == SOURCE_KIND, EVENTS.c.status == "open"
                )
            ).scalars()
        )
        # Per worker, the streams to give away first at the end of the list.
        candidates: dict[int, list[str]] = {}
        for row in sorted(rows, key=lambda r: (r.id not in busy, r.created_at, r.id)):
            candidates.setdefault(row.worker, []).append(row.id)
        for old, new in moves:
            stream_id = candidates[old].pop()
            if move_stream(conn, stream_id, old, new):
                made.append(Move(stream_id, old, new))
    return made


class LiveWorkers:
    """The live workers as one API replica sees them: their actor handles (None: not placed), their state in
    Ray's GCS actor table and the node each is pinned to, refreshed and placed by `refresh`."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.count = settings.cluster_live_workers
        self.gpus = gpu_share(settings.cluster_live_gpus, LIVE_WORKER_GPUS)
        # Set on the class: Ray takes concurrency groups there only, not in `.options()`.
        self._actor = ray.remote(concurrency_groups={READS_GROUP: 2, SCENES_GROUP: 2})(LiveWorker)
        self._handles: list[Any | None] = [None] * self.count
        self.states: list[str] = []  # empty until the first refresh
        self.nodes: list[str | None] = [None] * self.count
        self._lock = threading.Lock()
        self._unplaced: list[int] = []  # as last logged
        # Workers whose model is loaded, by actor id (a new incarnation loads it again), and pending asks.
        self._ready: set[str] = set()
        self._asking: dict[str, Any] = {}

    def __len__(self) -> int:
        return self.count

    def handle(self, index: int) -> Any | None:
        """The worker's actor handle, or None when it has none (not placed, or its node died)."""
        return self._handles[index] if 0 <= index < self.count else None

    def ready(self) -> list[int]:
        """The ALIVE workers whose model is loaded (as of the last refresh; asked without waiting)."""
        current = {h._actor_id.hex() for h in self._handles if h is not None}
        self._asking = {a: ref for a, ref in self._asking.items() if a in current}
        self._ready &= current
        found = []
        for index, state in enumerate(self.states):
            handle = self._handles[index]
            if state != "ALIVE" or handle is None:
                continue
            actor_id = handle._actor_id.hex()
            if actor_id not in self._ready:
                ref = self._asking.get(actor_id)
                if ref is None:
                    self._asking[actor_id] = handle.ready.options(concurrency_group=READS_GROUP).remote()
                    continue
                done, _ = ray.wait([ref], timeout=0)
                if not done:
                    continue
                del self._asking[actor_id]
                try:
                    if not ray.get(done[0]):
                        continue  # still loading: asked again next time
                except ray.exceptions.RayError:
                    continue
                self._ready.add(actor_id)
            found.append(index)
        return found

    def hosting_nodes(self) -> list[str]:
        """Alive nodes that can host a live worker (its GPU share fits the node's GPUs), oldest first."""
        found = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            if self.gpus > 0 and node.get("Resources", {}).get("GPU", 0) < self.gpus:
                continue
            found.append(node)
        # Oldest first, so placement prefers nodes that have lasted.
        found.sort(key=lambda n: (n.get("StartTime", 0), n["NodeID"]))
        return [n["NodeID"] for n in found]

    def refresh(self) -> list[str]:
        """Read every worker's state and node from Ray, create the missing ones on free nodes, separate two on
        one node; returns the states by index: Ray's actor states (`ALIVE`, `PENDING_CREATION`, `RESTARTING`,
        `DEAD`, ...), `NOT_PLACED` for a worker without an actor, `UNKNOWN` when the GCS could not be read."""
        from ray._private import state

        with self._lock:
            states, nodes = [], []
            for index in range(self.count):
                handle = self._handles[index]
                if handle is None:
                    try:
                        handle = ray.get_actor(worker_name(index), namespace=NAMESPACE)
                    except ValueError:  # no such actor (never created, or dead)
                        handle = None
                info: dict[str, Any] = {}
                if handle is not None:
                    try:
                        info = state.actors(actor_id=handle._actor_id.hex()) or {}
                    except Exception as exc:  # a GCS hiccup: nothing is concluded from it
                        logger.warning("live worker %d: state unavailable: %s", index, exc)
                        info = {"State": "UNKNOWN"}
                found = str(info.get("State", NOT_PLACED if handle is None else "UNKNOWN"))
                node = (info.get("Address") or {}).get("NodeID")
                if found == "DEAD":
                    handle, node = None, None  # its name is free again: created anew where there is room
                self._handles[index] = handle
                states.append(found)
                nodes.append(node if node and node != _NO_NODE else None)
            self.states, self.nodes = states, nodes
            if any(h is not None and n is None for h, n in zip(self._handles, nodes, strict=True)):
                # A worker being scheduled (its node not known yet) or unreadable: nothing is placed beside it
                # now, or two replicas could put two workers on one node.
                return states
            self._place(states, nodes)
            return self.states

    def _place(self, states: list[str], nodes: list[str | None]) -> None:
        pinned = [node if self._handles[i] is not None else None for i, node in enumerate(nodes)]
        if all(node is not None for node in pinned) and not doubled(pinned):
            return
        hosting = self.hosting_nodes()
        for index in doubled(pinned):
            if any(node not in pinned for node in hosting):
                logger.warning(
                    "live workers share node %s: stopping worker %d, to be placed on a free node",
                    pinned[index],
                    index,
                )
                ray.kill(self._handles[index], no_restart=True)
                self._handles[index], pinned[index] = None, None
                states[index] = "DEAD"
        for index, node in plan(pinned, hosting).items():
            self._handles[index] = self._actor.options(
                name=worker_name(index),
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                # Restarted on its node when its process dies; a dead node leaves it DEAD (not restartable).
                max_restarts=-1,
                max_task_retries=-1,
                num_cpus=0,
                num_gpus=self.gpus,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(self.settings, index)
            nodes[index] = node
            states[index] = "PENDING_CREATION"
            logger.info("live worker %d placed on node %s", index, node)
        unplaced = [i for i, handle in enumerate(self._handles) if handle is None]
        if unplaced and unplaced != self._unplaced:
            logger.warning("live workers %s have no node to run on (fewer free nodes than workers)", unplaced)
        self._unplaced = unplaced
        self.states, self.nodes = states, nodes
