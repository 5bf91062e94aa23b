"""Cluster mode end to end (marker `cluster`): a two-node Ray cluster on loopback, a real PostgreSQL server, two
API replicas and the real RTSP camera."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.cluster import failover_probe as probe
from tests.cluster.conftest import ClusterStack
from tests.footage import encode_ped2_clip
from tests.ray_cluster import listening_addresses, peer_addresses
from tests.reliability.conftest import wait_for
from tests.service.conftest import (
    ServerProcess,
    encode_looped_clip,
    upload_video,
    wait_event_with_snapshot,
    wait_final,
)
from tests.service.live.service_process import next_snippets

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

# Thresholds of 0 make every score an anomaly: an event opens at the first final score (with its media).
ALWAYS = {"enter_threshold": 0.0, "exit_threshold": 0.0, "min_duration_s": 0.0}


def open_live(server: ServerProcess, stream_id: str, since: int | None = None):
    query = f"?since={since}" if since is not None else ""
    ws_url = server.url.replace("http://", "ws://")
    return connect(
        f"{ws_url}/streams/{stream_id}/live{query}", additional_headers=server.headers, open_timeout=10
    )


def test_registrations_are_shared_and_any_replica_serves_any_stream(
    stack: ClusterStack, tmp_path: Path
) -> None:
    a, b = stack.replicas
    with a.client() as ca, b.client() as cb:
        created = ca.post("/streams", json={"url": stack.camera.url, "name": "gate", "events": ALWAYS})
        assert created.status_code == 201, created.text
        stream = created.json()
        sid = stream["id"]
        assert [s["id"] for s in cb.get("/streams").json()["items"]] == [sid]
        assert cb.get(f"/streams/{sid}").json()["name"] == "gate"
        with open_live(b, sid) as ws:
            finals = next_snippets(ws, 2, timeout=90, status="final")
        assert [m["index"] for m in finals] == [finals[0]["index"], finals[0]["index"] + 1]
        wait_for(lambda: cb.get(f"/streams/{sid}").json()["state"] == "live", 30, "live state via b")

        # The camera's scene model lives on its worker: both replicas read and change that copy, not their own.
        learning = cb.get(f"/streams/{sid}/scene").json()
        assert learning["state"] == "learning" and learning["snippets_learned"] >= 1, learning
        footage = encode_ped2_clip(tmp_path / "normal.mp4", "training/frames/02", max_frames=48)
        learned = ca.post(
            f"/streams/{sid}/scene/footage", files={"file": ("normal.mp4", footage.read_bytes())}
        )
        assert learned.status_code == 200, learned.text
        assert learned.json()["footage_s"] >= learning["footage_s"] + 4.8
        assert cb.get(f"/streams/{sid}/scene").json()["footage_s"] >= learned.json()["footage_s"]
        # `?camera=` analysis on the cluster scores the file with that scene (as a Ray task).
        job = upload_video(cb, footage, camera=sid)
        assert job.status_code in (200, 202), job.text
        done = job.json() if job.status_code == 200 else wait_final(cb, job.json()["id"], 120)
        assert done["status"] == "succeeded", done
        assert done["result"]["camera"] == sid
        assert all(s["scene_score"] is None for s in done["result"]["snippets"])  # still learning
        assert cb.delete(f"/streams/{sid}/scene").status_code == 204
        assert ca.get(f"/streams/{sid}/scene").json()["footage_s"] < learned.json()["footage_s"]

        # The event's snapshot, recorded on a live worker, is served by the other replica from the shared store;
        # so is the stream's newest frame, asked of its worker.
        event = wait_event_with_snapshot(cb, sid, 30)
        snapshot = cb.get(event["snapshot_url"])
        assert snapshot.status_code == 200 and snapshot.headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR) is not None
        latest = cb.get(f"/streams/{sid}/snapshot.jpg")
        assert latest.status_code == 200 and latest.content[:2] == b"\xff\xd8"

        # A replica's /metrics shows the live workers' pipeline, labelled by worker.
        metrics = _metrics(ca)
        worker = str(_assigned(stack.database.url())[sid])
        assert metrics[("refinevad_live_streams", frozenset({("state", "live"), ("worker", worker)}))] == 1
        live_snippets = frozenset({("source", "live"), ("worker", worker)})
        assert metrics[("refinevad_snippets_processed_total", live_snippets)] >= 2
        assert metrics[("refinevad_live_latency_seconds_count", frozenset({("worker", worker)}))] >= 1
        assert all(
            metrics[("refinevad_cluster_worker_metrics_up", frozenset({("worker", w)}))] == 1 for w in "01"
        )

        assert ca.delete(f"/streams/{sid}").status_code == 204
        assert cb.get(f"/streams/{sid}").status_code == 404
        assert cb.get("/streams").json()["total"] == 0
        # Removing the stream finished the clip: stored whole, served through either replica, seekable.
        clip = wait_for(
            lambda: (r := cb.get(f"/events/{event['id']}/clip.mp4")).status_code == 200 and r, 30, "the clip"
        )
        assert clip.headers["content-type"] == "video/mp4" and clip.content[4:8] == b"ftyp"
        part = ca.get(f"/events/{event['id']}/clip.mp4", headers={"Range": "bytes=10-109"})
        assert part.status_code == 206 and part.content == clip.content[10:110]
        assert part.headers["content-range"] == f"bytes 10-109/{len(clip.content)}"
    # Every Ray process (both nodes, their workers and actors) listens and connects on loopback only.
    ray_pids = stack.head.pids() + stack.worker.pids()
    loopback = {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}
    listening, peers = listening_addresses(ray_pids), peer_addresses(ray_pids)
    assert listening and listening <= loopback, listening
    assert peers and peers <= loopback, peers


def _metrics(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _finals_stored(database_url: str, stream_id: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT snippet_index, text FROM live_messages WHERE stream_id = %s AND snippet_index IS NOT NULL",
            (stream_id,),
        ).fetchall()
    return sorted(index for index, text in rows if json.loads(text).get("status") == "final")


def _stream_events(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, source_id, start_s, status FROM events WHERE source_kind = 'stream' ORDER BY id"
        ).fetchall()


def _actors(stack: ClusterStack, indices: tuple[int, ...] = (0, 1)) -> dict[int, dict]:
    """What live workers say of themselves: their node, their streams, their model."""
    result = stack.ray.driver(
        f"result = {{i: ray.get(ray.get_actor(f'live-worker-{{i}}').info.remote(), timeout=60) for i in {indices}}}"
    )
    assert isinstance(result, dict)
    return {int(index): info for index, info in result.items()}


def _assigned(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT id, worker FROM streams").fetchall())


def test_a_dead_node_loses_no_stream_snippet_event_or_job(
    stack: ClusterStack, tmp_path: Path, report
) -> None:
    a, b = stack.replicas
    url = stack.database.url()
    with a.client() as ca, b.client() as cb:
        streams = [
            ca.post("/streams", json={"url": stack.camera.url, "name": f"cam{i}"}).json() for i in range(6)
        ]
        ids = [s["id"] for s in streams]
        assert cb.get("/streams").json()["total"] == 6
        wait_for(lambda: all(_finals_stored(url, sid) for sid in ids), 120, "every stream to score")
        actors = _actors(stack)
        # The live workers are pinned one per node.
        assert len({info["node_id"] for info in actors.values()}) == 2, actors
        worker_node = stack.ray.node_id_of(stack.worker)
        victim = next(i for i, info in actors.items() if info["node_id"] == worker_node)
        survivor = 1 - victim
        victims = actors[victim]["streams"]
        assert len(victims) == 3 and set(victims) < set(ids)

        # Two long jobs at once: one per node (each node has one CPU for jobs), so one runs on the victim.
        video = encode_looped_clip(tmp_path / "long.mp4", repeats=6)
        jobs = [upload_video(ca, video).json()["id"] for _ in range(2)]
        wait_for(
            lambda: all(cb.get(f"/jobs/{j}").json()["progress"] > 0 for j in jobs),
            240,  # each job's Ray worker process loads the model first: minutes on a busy 2-core machine
            "both jobs to run",
        )
        received: dict[str, list[int]] = {}
        for sid in victims:
            with open_live(b, sid) as ws:
                received[sid] = [m["index"] for m in next_snippets(ws, 1, timeout=30, status="final")]
        events_before = _stream_events(url)
        stored_before = probe.messages(url)
        last_before = probe.last_indices(url, victims)

        killed_at = time.time()
        killed = stack.worker.kill()
        report("killed_processes", len(killed))
        resumed = probe.wait_resumed(url, last_before, killed_at, timeout=60)
        scored_s, final_s = max(resumed.scored_s.values()), max(resumed.final_s.values())
        report("streams_scored_again_after_s", scored_s)
        report("streams_final_scores_again_after_s", final_s)
        # Handed over, not restarted: the surviving worker, model loaded, scores them within seconds (here with
        # a file job running beside it on this 2-core machine).
        assert scored_s < 10, f"the dead node's streams were scored again only {scored_s:.1f}s after the kill"
        assert {sid: _assigned(url)[sid] for sid in victims} == dict.fromkeys(victims, survivor)
        assert sorted(_actors(stack, (survivor,))[survivor]["streams"]) == sorted(ids)
        # Fewer nodes than workers now: the lost worker has no actor until a node joins (never two on one node).
        assert probe.workers(stack.ray)[victim] == {"state": "NOT_PLACED", "node": None}
        # A replica's /metrics leaves the lost worker out, and says so; the survivor's pipeline is there.
        metrics = _metrics(cb)
        lost, alive = frozenset({("worker", str(victim))}), frozenset({("worker", str(survivor))})
        assert metrics[("refinevad_cluster_worker_metrics_up", lost)] == 0
        assert metrics[("refinevad_cluster_worker_metrics_missed_total", lost)] >= 1
        assert metrics[("refinevad_cluster_worker_metrics_up", alive)] == 1
        assert not any(labels >= lost for _name, labels in metrics if _name.startswith("refinevad_live_"))
        assert metrics[("refinevad_snippets_processed_total", alive | {("source", "live")})] > 0

        # A client that reconnects with `since` gets every final snippet stored from there on, in order.
        for sid in victims:
            since = received[sid][-1] + 1
            stored = [i for i in _finals_stored(url, sid) if i >= since]
            with open_live(b, sid, since=since) as ws:
                got = [m["index"] for m in next_snippets(ws, len(stored), timeout=30, status="final")]
            assert got == stored, sid

        # Events: none lost, none stored twice; the one the dead worker left open is continued by the survivor
        # under its id and start (open still, or closed by the survivor's scores), not interrupted.
        events_after = _stream_events(url)
        after_by_id = {row[0]: row for row in events_after}
        assert all(row[0] in after_by_id for row in events_before)
        assert len({(row[1], row[2]) for row in events_after}) == len(events_after)
        continued = [row for row in events_before if row[1] in victims and row[3] == "open"]
        for row in continued:
            assert after_by_id[row[0]][2:] in ((row[2], "open"), (row[2], "closed")), after_by_id[row[0]]
        report("open_events_continued_by_handover", len(continued))
        for sid in ids:
            assert sum(1 for row in events_after if row[1] == sid and row[3] == "open") <= 1

        # The job that ran on the dead node is re-run by Ray and succeeds, as does the other.
        for job_id in jobs:
            final = wait_final(ca, job_id, timeout=240)
            assert final["status"] == "succeeded", final
            assert final["result"]["frames"] == 6 * 180

        # A machine joins: the lost worker is placed there, and once its model is loaded half the streams
        # spread back to it and score there.
        rejoined = stack.ray.add_node("worker2", num_cpus=1, num_gpus=1)
        joined_at = time.time()
        wait_for(
            lambda: probe.spread_back(url, victim, joined_at), 180, "streams to spread back", interval=0.5
        )
        report("spread_back_after_join_s", time.time() - joined_at)
        placed = probe.workers(stack.ray)
        assert placed[victim] == {"state": "ALIVE", "node": stack.ray.node_id_of(rejoined)}
        assert placed[survivor]["node"] == stack.ray.node_id_of(stack.head)
        counts = [list(_assigned(url).values()).count(w) for w in (0, 1)]
        assert counts == [3, 3], counts
        # Moving back hands the open events over too: none was closed by the move or marked interrupted.
        with psycopg.connect(url) as conn:
            ended_by_moves = conn.execute(
                "SELECT id, status, end_reason FROM events WHERE source_kind = 'stream' AND source_id = ANY(%s) "
                "AND (status = 'interrupted' OR end_reason = 'stream_removed')",
                (list(ids),),
            ).fetchall()
        assert ended_by_moves == []
        # Nothing stored before the kill was lost or changed, no stream's numbering has a gap, nothing twice.
        time.sleep(2)
        assert (
            probe.integrity_problems(stored_before, probe.messages(url), events_before, _stream_events(url))
            == []
        )
        late = ca.post("/streams", json={"url": stack.camera.url, "name": "late"}).json()
        wait_for(lambda: bool(_finals_stored(url, late["id"])), 120, "the new stream to score")
