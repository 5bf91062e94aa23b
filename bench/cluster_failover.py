"""Cluster mode: failover by handover, timed. A node running a live worker is SIGKILLed (every process of it at
once, as a machine dying would), its streams go to the surviving worker, and the time from the kill to the first
scored snippet of every moved stream is measured; then a node joins, a live worker is placed on it and streams
spread back to it; repeated `--kills` times.

Run from the repository root (needs PostgreSQL and GStreamer's RTSP server, as the cluster tests do)::

    .venv/bin/python -m bench.cluster_failover --kills 5      # about 8 minutes on a 2-core CPU

Everything runs on this machine, on loopback: PostgreSQL, a Ray head and one worker node (one CPU and one
advertised GPU each: one live worker on each), one API replica (`refinevad serve --cluster`), and the real test
RTSP camera at 10 fps feeding `--streams` streams. Ray's failure detection is the tests' (a dead node is declared
after two missed 0.5 s health checks). Each kill is of the node that is not the head (killing the head would end
the cluster); the node that then joins gets the lost worker, so the next kill is of it.

Per kill: `scored` is the kill to the first scored snippet (provisional or final) of the last moved stream to be
scored again, from the messages' stored times; `final` the same for the first final score (one snippet later:
a snippet's final score needs its successor). After the last kill every stored message and event is checked
against what was stored before each kill: nothing lost, no gap in any stream's numbering, nothing twice.
Ends with the line `failover: median X s, max Y s over N kills` (of `scored`).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

log = logging.getLogger("bench.cluster_failover")

CAMERA_FPS = 10


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return value


def run(kills: int, streams: int, root: Path, camera_url: str) -> dict[str, Any]:
    from tests.cluster import failover_probe as probe
    from tests.cluster.conftest import REPLICA_ENV
    from tests.postgres_server import PostgresServer
    from tests.ray_cluster import RayCluster
    from tests.service.conftest import ServerProcess

    database = PostgresServer().start()
    cluster = RayCluster(root / "ray")
    replica: ServerProcess | None = None
    results: dict[str, Any] = {"streams": streams, "kills": []}
    try:
        head = cluster.start_head(num_cpus=1, num_gpus=1)
        node = cluster.add_node("node-1", num_cpus=1, num_gpus=1)
        url = database.url()
        env = {
            **REPLICA_ENV,
            "REFINEVAD_DATABASE_URL": url,
            "REFINEVAD_CLUSTER_ADDRESS": cluster.address,
            "REFINEVAD_LIVE_REPLAY": "100000",  # nothing pruned: every stored message is checked at the end
        }
        replica = ServerProcess(root / "replica", env=env).start(timeout=300)
        with replica.client() as client:
            ids = []
            for i in range(streams):
                created = client.post("/streams", json={"url": camera_url, "name": f"cam{i}"})
                created.raise_for_status()
                ids.append(created.json()["id"])
        _wait(lambda: min(probe.last_indices(url, ids).values()) >= 1, 180, "every stream to score")
        snapshots: list[tuple[dict, list]] = []
        for kill in range(1, kills + 1):
            placed = probe.workers(cluster)
            victim_node = cluster.node_id_of(node)
            victim = next(i for i, info in placed.items() if info["node"] == victim_node)
            survivor = next(i for i in placed if i != victim)
            moved = sorted(sid for sid, worker in probe.assigned(url).items() if worker == victim)
            if not moved:
                raise RuntimeError(f"kill {kill}: live worker {victim} on the node to kill runs no stream")
            snapshots.append((probe.messages(url), probe.stream_events(url)))
            last = probe.last_indices(url, moved)
            killed_at = time.time()  # before: the kill's signals go out while it lists the node's processes
            node.kill()
            resumed = probe.wait_resumed(url, last, killed_at, timeout=60)
            reassigned = probe.assigned(url)
            if any(reassigned[sid] != survivor for sid in moved):
                raise RuntimeError(f"kill {kill}: moved streams not all on worker {survivor}: {reassigned}")
            scored, final = max(resumed.scored_s.values()), max(resumed.final_s.values())
            log.info(
                "kill %d: %d streams of worker %d scored again after %.2fs (final %.2fs)",
                kill,
                len(moved),
                victim,
                scored,
                final,
            )

            # A node joins: the lost worker is placed there and streams spread back to it.
            node = cluster.add_node(f"node-{kill + 1}", num_cpus=1, num_gpus=1)
            joined_at = time.time()
            joined_node = cluster.node_id_of(node)

            _wait(
                lambda w=victim, t=joined_at: probe.spread_back(url, w, t),
                180,
                f"streams to spread back to worker {victim}",
                interval=0.5,
            )
            spread_s = time.time() - joined_at
            again = probe.workers(cluster)
            if again[victim]["node"] != joined_node or again[survivor]["node"] == joined_node:
                raise RuntimeError(f"kill {kill}: workers not one per node after the join: {again}")
            log.info(
                "kill %d: node joined, streams back on worker %d scoring %.1fs after", kill, victim, spread_s
            )
            results["kills"].append(
                {
                    "kill": kill,
                    "moved_streams": len(moved),
                    "scored_s": round(scored, 3),
                    "final_s": round(final, 3),
                    "per_stream_scored_s": {sid: round(v, 3) for sid, v in resumed.scored_s.items()},
                    "spread_back_s": round(spread_s, 1),
                }
            )
        time.sleep(3)  # the last messages of the run stored
        after, events_after = probe.messages(url), probe.stream_events(url)
        problems = [
            problem
            for before, events_before in snapshots
            for problem in probe.integrity_problems(before, after, events_before, events_after)
        ]
        results["integrity_problems"] = sorted(set(problems))
        results["messages_checked"] = sum(len(v) for v in after.values())
        results["head_alive"] = head.proc.poll() is None
    finally:
        if replica is not None:
            replica.kill()
        cluster.stop()
        database.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="node kills (each followed by a node joining)")
    parser.add_argument(
        "--streams", type=int, default=4, help="camera streams registered (half on each node)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--work-dir", type=Path, help="keep the logs (replica, Ray nodes) here")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.streams < 2:
        parser.error("--kills must be at least 1 and --streams at least 2 (one per live worker)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from tests.postgres_server import postgres_available
    from tests.rtsp_server import RtspServerProcess, gstreamer_available

    if not postgres_available() or not gstreamer_available():
        print("needs PostgreSQL and GStreamer's RTSP server (see .ci/setup)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, RtspServerProcess(fps=CAMERA_FPS) as camera:
        root = args.work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        results = run(args.kills, args.streams, root, camera.url)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(
        "\n| kill | moved streams | kill to first score s | kill to first final s | node join to scores back s |"
    )
    print("| --- | --- | --- | --- | --- |")
    for k in results["kills"]:
        print(
            f"| {k['kill']} | {k['moved_streams']} | {k['scored_s']} | {k['final_s']} | {k['spread_back_s']} |"
        )
    problems = results["integrity_problems"]
    print(
        f"store: {results['messages_checked']} messages checked, "
        + ("nothing lost or stored twice" if not problems else "PROBLEMS: " + "; ".join(problems))
    )
    scored = [k["scored_s"] for k in results["kills"]]
    finals = [k["final_s"] for k in results["kills"]]
    print(f"first final score: median {statistics.median(finals):.2f} s, max {max(finals):.2f} s")
    print(
        f"failover: median {statistics.median(scored):.2f} s, max {max(scored):.2f} s over {len(scored)} kills"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
