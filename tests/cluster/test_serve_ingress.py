"""The Ray Serve ingress (`service.cluster.serve_ingress`, what the KubeRay RayService runs), for real: a one-node
Ray cluster on loopback, a real PostgreSQL server, the application deployed with `serve.run` and Serve's HTTP proxy
on 127.0.0.1. The service's app answers through the proxy (health, readiness, a synchronous analysis run as a Ray
task, a stream registration) and carries a WebSocket; nothing of Ray or Serve listens beyond loopback."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.footage import encode_ped2_clip
from tests.postgres_server import PostgresServer, postgres_available
from tests.ray_cluster import RayCluster, listening_addresses, peer_addresses
from tests.reliability.conftest import LIVE_ENV, wait_for
from tests.rtsp_server import free_port
from tests.service.conftest import API_KEY, upload_video

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

LOOPBACK = {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}


def test_the_service_answers_http_and_websockets_through_serve(tmp_path: Path) -> None:
    pytest.importorskip(
        "ray.serve", reason="Ray Serve's dependencies are not installed (pip install 'ray[serve]')"
    )
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (Debian package `postgresql`, see .ci/setup)")
    database = PostgresServer().start()
    data = tmp_path / "data"
    # The Ray node's environment is the replicas' (in Kubernetes: the container's env and Secrets).
    env = {
        **LIVE_ENV,
        "REFINEVAD_DATABASE_URL": database.url(),
        "REFINEVAD_DATA_DIR": str(data),
        "REFINEVAD_API_KEYS": API_KEY,
        "REFINEVAD_DEVICE": "cpu",
        "REFINEVAD_TORCH_THREADS": "1",
        "REFINEVAD_MOTION_THREADS": "1",
        "REFINEVAD_CLUSTER_LIVE_WORKERS": "1",
        "REFINEVAD_JOB_WORKERS": "1",
    }
    ray = RayCluster(tmp_path / "ray", env=env)
    port = free_port()
    try:
        # Two CPUs: one for the ingress replica, one for the analysis task (Serve's proxy and controller and the
        # live worker take none).
        head = ray.start_head(num_cpus=2)
        status = ray.driver(
            "from ray import serve\n"
            "from service.cluster.serve_ingress import RefineVADIngress\n"
            f"serve.start(http_options={{'host': '127.0.0.1', 'port': {port}}})\n"
            "serve.run(RefineVADIngress.options(num_replicas=1).bind(), name='refinevad', route_prefix='/')\n"
            "result = str(serve.status().applications['refinevad'].status.value)\n",
            timeout=600,
        )
        assert status == "RUNNING"
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=600) as client:
            assert client.get("/health").status_code == 200
            wait_for(lambda: client.get("/ready").status_code == 200, 300, "the model to load", interval=1)
            video = encode_ped2_clip(tmp_path / "short.mp4", clip="testing/frames/02", max_frames=80)
            analysed = upload_video(client, video)
            assert analysed.status_code == 200, analysed.text
            assert analysed.json()["status"] == "succeeded" and analysed.json()["result"]["frames"] == 80
            assert client.get("/jobs").json()["total"] == 1

            dead_camera = f"rtsp://127.0.0.1:{free_port()}/cam"
            created = client.post("/streams", json={"url": dead_camera, "name": "gate"})
            assert created.status_code == 201, created.text
            stream_id = created.json()["id"]
            ws_url = f"ws://127.0.0.1:{port}/streams/{stream_id}/live?api_key={API_KEY}"
            with connect(ws_url, open_timeout=30) as ws:
                # The live worker reports the unreachable camera's state; the message comes back through the
                # store, the replica's relay and Serve's proxy.
                message = json.loads(ws.recv(timeout=180))
            assert isinstance(message, dict) and message, message
            assert client.delete(f"/streams/{stream_id}").status_code == 204
        # Each replica spools uploads in a folder of its own (replicas of one node share its disk); the
        # analysed upload is gone from it.
        (spool,) = [p for p in (data / "uploads").iterdir() if p.name.startswith("serve-")]
        assert [p for p in spool.rglob("*") if p.is_file()] == []  # task copies included (spool/tasks)
        listening, peers = listening_addresses(head.pids()), peer_addresses(head.pids())
        assert listening and listening <= LOOPBACK, listening
        assert peers and peers <= LOOPBACK, peers
    finally:
        ray.stop()
        database.stop()
