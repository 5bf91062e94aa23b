"""The cluster stack for the `cluster` tests: a real PostgreSQL server, a two-node Ray cluster on loopback (head
plus one worker node, one CPU and one GPU each), the real test RTSP camera, and two API replicas (`refinevad serve
--cluster`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.postgres_server import PostgresServer, postgres_available
from tests.ray_cluster import LOOPBACK_ENV, RayCluster, RayNode
from tests.reliability.conftest import report  # noqa: F401 (a fixture, registered by importing it here)
from tests.rtsp_server import RtspServerProcess, gstreamer_available
from tests.service.conftest import ServerProcess

REPLICA_ENV = {
    **LOOPBACK_ENV,
    "REFINEVAD_ALLOWED_SCHEMES": "rtsp,http,file",
    "REFINEVAD_ALLOWED_HOSTS": "127.0.0.1",
    "REFINEVAD_LIVE_RECONNECT_INITIAL_S": "0.3",
    "REFINEVAD_LIVE_RECONNECT_MAX_S": "1.5",
    "REFINEVAD_LIVE_OPEN_TIMEOUT_S": "3",
    "REFINEVAD_LIVE_READ_TIMEOUT_S": "3",
    "REFINEVAD_TORCH_THREADS": "1",
    "REFINEVAD_MOTION_THREADS": "1",
    "REFINEVAD_CLUSTER_SYNC_S": "1",
    "REFINEVAD_SYNC_MAX_SECONDS": "0",  # every upload is a background job: the test watches where it runs
    "REFINEVAD_MAX_UPLOAD_MB": "32",
    "REFINEVAD_JOB_WORKERS": "2",  # a replica hands Ray as many jobs as the cluster has room for
    "OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;tcp",
}


@dataclass
class ClusterStack:
    database: PostgresServer
    ray: RayCluster
    head: RayNode
    worker: RayNode
    camera: RtspServerProcess
    replicas: list[ServerProcess]


@pytest.fixture(scope="module")
def replica_env() -> dict[str, str]:
    """Settings a test module adds to the replicas' environment (override it in the module)."""
    return {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, replica_env: dict[str, str]) -> Iterator[ClusterStack]:
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (Debian package `postgresql`, see .ci/setup)")
    if not gstreamer_available():
        pytest.skip("GStreamer's RTSP server is not installed (see .ci/setup)")
    root = tmp_path_factory.mktemp("cluster")
    database = PostgresServer().start()
    ray = RayCluster(root)
    camera = RtspServerProcess(fps=10)
    replicas: list[ServerProcess] = []
    try:
        # Each node advertises one GPU, as a one-GPU machine would (there is no CUDA here: torch runs on the CPU
        # whatever CUDA_VISIBLE_DEVICES Ray sets); a live worker's share of it puts one worker on each node.
        head = ray.start_head(num_cpus=1, num_gpus=1)
        worker = ray.add_node("worker1", num_cpus=1, num_gpus=1)
        camera.start()
        env = {
            **REPLICA_ENV,
            **replica_env,
            "REFINEVAD_DATABASE_URL": database.url(),
            "REFINEVAD_CLUSTER_ADDRESS": ray.address,
        }
        for name in ("replica-a", "replica-b"):
            replicas.append(ServerProcess(root / name, env=env).start(timeout=180))
        yield ClusterStack(database, ray, head, worker, camera, replicas)
    finally:
        for replica in replicas:
            replica.kill()
        camera.kill()
        ray.stop()
        database.stop()
