"""Cluster mode: live streams sustained and `POST /analyze` throughput with 1 and 2 Ray worker nodes, and the
per-request overhead of the API ingress (plain uvicorn replicas, as the service runs them, against Ray Serve's
FastAPI ingress on the same app).

Run from the repository root (needs PostgreSQL and GStreamer's RTSP server, as the tests do; Ray Serve's part
needs `pip install "ray[serve]"` and is skipped without it)::

    .venv/bin/python -m bench.cluster_scaling              # a few minutes on a 2-core CPU

Everything runs on this machine, on loopback: a PostgreSQL server, a Ray head that runs nothing (`--num-cpus=0`)
plus N worker nodes of one CPU and one (advertised) GPU each (a live worker's GPU share puts one on each node),
one API replica, and the real test RTSP camera at 10 fps. On a single machine the nodes share its cores, so the 2-node figures show the cluster's overheads and
placement, not a second machine's capacity: the per-node figures are reported as measured, with that caveat.

- streams: added two at a time; once all are live and warmed up, a step is sustained when over the measurement
  window every stream processed >= 90% of the snippets its camera produced and none dropped a frame for lag.
- analyze: `--jobs` background uploads of a 48 s Ped2 video at once; jobs per minute and video seconds analysed per
  wall-clock second until all succeeded.
- ingress: `--requests` sequential `GET /health` through each ingress; p50 and p95 in milliseconds.
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

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

log = logging.getLogger("bench.cluster_scaling")

CAMERA_FPS = 10


def _latencies(client: httpx.Client, path: str, requests: int) -> dict[str, float]:
    for _ in range(20):  # warm-up: connections, caches
        client.get(path)
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(0.95 * len(samples))], 3),
    }


def _wait_live(client: httpx.Client, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = client.get("/streams").json()["items"]
        if all(v["state"] == "live" and v["snippets_processed"] > 0 for v in views if v["id"] in ids):
            return
        time.sleep(1.0)
    raise RuntimeError(f"streams not live after {timeout}s")


def _sustained_streams(
    client: httpx.Client, camera_url: str, limit: int, warmup_s: float, measure_s: float, snippet_s: float
) -> int:
    """Streams added two at a time; a step is sustained when, over `measure_s`, every stream processed at least
    90% of the snippets its camera produced and dropped no frame for lag."""
    sustained, ids = 0, []
    try:
        while len(ids) < limit:
            for _ in range(2):
                created = client.post("/streams", json={"url": camera_url, "name": f"cam{len(ids)}"})
                created.raise_for_status()
                ids.append(created.json()["id"])
            _wait_live(client, ids, timeout=180)
            time.sleep(warmup_s)
            before = {v["id"]: v for v in client.get("/streams").json()["items"]}
            time.sleep(measure_s)
            after = {v["id"]: v for v in client.get("/streams").json()["items"]}
            expected = measure_s / snippet_s
            share = min(
                (after[i]["snippets_processed"] - before[i]["snippets_processed"]) / expected for i in ids
            )
            dropped = sum(after[i]["dropped_frames"] - before[i]["dropped_frames"] for i in ids)
            log.info("%d streams: slowest kept up %.0f%%, %d frames dropped", len(ids), 100 * share, dropped)
            if share < 0.9 or dropped > 0:
                break
            sustained = len(ids)
    finally:
        for stream_id in ids:
            client.delete(f"/streams/{stream_id}")
    return sustained


def _analyze_throughput(client: httpx.Client, video: Path, jobs: int, video_s: float) -> dict[str, float]:
    started = time.perf_counter()
    ids = []
    for _ in range(jobs):
        with video.open("rb") as handle:
            response = client.post("/analyze", files={"file": (video.name, handle, "video/mp4")})
        response.raise_for_status()
        ids.append(response.json()["id"])
    pending = set(ids)
    while pending:
        for job_id in list(pending):
            status = client.get(f"/jobs/{job_id}").json()["status"]
            if status in ("failed", "cancelled"):
                raise RuntimeError(f"job {job_id} {status}")
            if status == "succeeded":
                pending.discard(job_id)
        time.sleep(0.2)
    wall = time.perf_counter() - started
    return {"jobs_per_min": round(jobs / wall * 60, 2), "video_s_per_s": round(jobs * video_s / wall, 2)}


def measure_nodes(
    nodes: int, args: argparse.Namespace, root: Path, video: Path, camera_url: str
) -> dict[str, Any]:
    from tests.cluster.conftest import REPLICA_ENV
    from tests.postgres_server import PostgresServer
    from tests.ray_cluster import RayCluster
    from tests.service.conftest import ServerProcess

    database = PostgresServer().start()
    cluster = RayCluster(root / f"ray-{nodes}")
    replica = None
    try:
        cluster.start_head(num_cpus=0)
        for index in range(nodes):
            cluster.add_node(f"worker{index}", num_cpus=1, num_gpus=1)
        env = {
            **REPLICA_ENV,
            "REFINEVAD_DATABASE_URL": database.url(),
            "REFINEVAD_CLUSTER_ADDRESS": cluster.address,
            "REFINEVAD_CLUSTER_LIVE_WORKERS": str(nodes),
            "REFINEVAD_JOB_WORKERS": str(2 * nodes),
            "REFINEVAD_LIVE_MAX_STREAMS": "256",
        }
        replica = ServerProcess(root / f"replica-{nodes}", env=env).start(timeout=300)
        with replica.client(timeout=120) as client:
            streams = _sustained_streams(
                client, camera_url, args.max_streams, args.warmup_s, args.measure_s, 16 / CAMERA_FPS
            )
            analyze = _analyze_throughput(client, video, args.jobs, args.video_s)
            health = _latencies(client, "/health", args.requests)
        return {"nodes": nodes, "streams_sustained": streams, **analyze, "uvicorn_health": health}
    finally:
        if replica is not None:
            replica.kill()
        cluster.stop()
        database.stop()


def measure_ingress(requests: int, root: Path) -> dict[str, dict[str, float] | None]:
    """GET /health of the service's FastAPI app, back to back: as a plain uvicorn process (`refinevad serve`) and
    through Ray Serve's FastAPI ingress on a local Ray instance (None when Ray Serve is not installed)."""
    from tests.service.conftest import ServerProcess

    server = ServerProcess(root / "plain", env={"REFINEVAD_TORCH_THREADS": "1"}).start(timeout=120)
    try:
        with server.client() as client:
            plain = _latencies(client, "/health", requests)
    finally:
        server.kill()
    return {"uvicorn": plain, "serve": _serve_ingress(requests)}


def _serve_ingress(requests: int) -> dict[str, float] | None:
    try:
        from ray import serve
    except ImportError as exc:
        log.warning("Ray Serve is not installed (%s): its ingress is not measured", exc)
        return None
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # A throwaway local instance: no auth token written into the user's ~/.ray.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from service.app import create_app
    from service.settings import ServiceSettings
    from tests.rtsp_server import free_port

    with tempfile.TemporaryDirectory() as tmp:
        settings = ServiceSettings(data_dir=Path(tmp) / "data", device="cpu")
        port = free_port()
        ray.init(
            num_cpus=1,
            include_dashboard=False,
            object_store_memory=80 * 2**20,
            log_to_driver=False,
            _temp_dir=str(Path(tmp) / "ray"),
        )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})

            def build_app():  # runs on the Serve replica: the app holds threads and connections
                return create_app(settings)

            ingress = serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})(
                serve.ingress(build_app)()
            )
            serve.run(ingress.bind(), route_prefix="/")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                return _latencies(client, "/health", requests)
        finally:
            serve.shutdown()
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nodes", type=int, nargs="*", default=[1, 2], help="worker node counts (none: ingress only)"
    )
    parser.add_argument("--max-streams", type=int, default=12)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--measure-s", type=float, default=16.0)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from tests.rtsp_server import RtspServerProcess
    from tests.service.conftest import encode_looped_clip

    results: dict[str, Any] = {"machine_cores": __import__("os").cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp, RtspServerProcess(fps=CAMERA_FPS) as camera:
        root = Path(tmp)
        video = encode_looped_clip(root / "video.mp4", repeats=8, fps=30.0)
        args.video_s = 8 * 180 / 30.0
        for nodes in args.nodes:
            results["runs"].append(measure_nodes(nodes, args, root, video, camera.url))
        results["ingress"] = measure_ingress(args.requests, root)

    print(f"\ncluster scaling on one {results['machine_cores']}-core machine (nodes share its cores)")
    print(
        "| worker nodes | streams sustained | /analyze jobs/min | video s analysed per s | GET /health p50 ms |"
    )
    print("| --- | --- | --- | --- | --- |")
    for run in results["runs"]:
        print(
            f"| {run['nodes']} | {run['streams_sustained']} | {run['jobs_per_min']} | {run['video_s_per_s']} | "
            f"{run['uvicorn_health']['p50_ms']} |"
        )
    runs = {run["nodes"]: run for run in results["runs"]}
    if 1 in runs and 2 in runs:
        print(
            f"2 nodes / 1 node: streams x{runs[2]['streams_sustained'] / max(runs[1]['streams_sustained'], 1):.2f}, "
            f"/analyze x{runs[2]['jobs_per_min'] / runs[1]['jobs_per_min']:.2f}"
        )
    plain, serve_health = results["ingress"]["uvicorn"], results["ingress"]["serve"]
    print(f"ingress GET /health p50: uvicorn {plain['p50_ms']} ms (p95 {plain['p95_ms']})")
    if serve_health is not None:
        print(
            f"ingress GET /health p50: uvicorn replica {plain['p50_ms']} ms, Ray Serve {serve_health['p50_ms']} ms "
            f"(x{serve_health['p50_ms'] / plain['p50_ms']:.1f}); p95 {plain['p95_ms']} vs {serve_health['p95_ms']} ms"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
