"""Ray Serve as an alternative ingress of cluster mode: the service's own FastAPI app, built by the same factory as
`refinevad serve --cluster` (`service.app.create_app`), served by Serve replicas behind Serve's HTTP proxy. This is
what a KubeRay `RayService` runs (`deploy/kuberay-rayservice.yaml`, `import_path:
service.cluster.serve_ingress:app`).

The recommended ingress stays the uvicorn replicas (`refinevad serve --cluster`): a GET costs about 1 ms there and
about 6-7 ms through Serve's proxy (`bench/cluster_scaling.py`). This one is for operators who want the whole
deployment as one RayService resource (cluster, application and upgrades managed by KubeRay).

Each replica builds the app itself (`serve.ingress` evaluates a builder function in the replica) and runs its
lifespan: Serve drives FastAPI's startup and shutdown through uvicorn's lifespan handler, so the database, the
model, the leased job workers and the live-stream relay start when Serve starts the replica (it is not healthy
before) and stop when Serve stops it. Settings come from the `REFINEVAD_*` environment of the Ray node (the
container's environment, where the database URL's Secret goes) as for `refinevad serve`; the cluster to use is the
one the replica runs in. Replicas on one node share its disk, so each spools uploads in a folder of its own,
`DATA_DIR/uploads/serve-<replica id>` (a process cleans its spool at start-up; in cluster mode every upload is
also in the shared store).

Ray Serve 2.60 binds each replica's inter-deployment gRPC server to every interface (`[::]:0`, with no setting:
ray-project/ray#64544), where the rest of Ray binds the node's address. Importing this module in a replica binds
that server to the node's address instead, the one other nodes reach it by (`_bind_replica_grpc_to_node_ip`).
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

logger = logging.getLogger(__name__)

DEPLOYMENT_NAME = "refinevad-api"
_ALL_INTERFACES = "[::]:0"


def _bind_replica_grpc_to_node_ip() -> None:
    """Make Serve's replica bind its inter-deployment gRPC server to this node's address, not every interface
    (see the module's docstring). Only that one address is rewritten; without the private hook (another Ray
    version) nothing changes and a warning says so."""
    from ray.serve._private import replica

    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None:
        logger.warning("Ray Serve has no add_port_to_grpc_server hook: replica gRPC binds as Ray chose")
        return
    if getattr(original, "binds_node_ip", False):
        return

    def add_port(server: Any, address: str) -> int:
        if address == _ALL_INTERFACES:
            ip = ray.util.get_node_ip_address()
            address = f"[{ip}]:0" if ":" in ip else f"{ip}:0"
        return original(server, address)

    add_port.binds_node_ip = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port


_bind_replica_grpc_to_node_ip()


def build_app() -> FastAPI:
    """The service's FastAPI app for this Serve replica (called by Serve in the replica, once).

    Raises pydantic's ValidationError for invalid settings (a cluster needs `REFINEVAD_DATABASE_URL`), and
    `service.storage.StorageError` when the database cannot be reached: Serve then reports the deployment as
    failed with that message and retries it.
    """
    from service.app import create_app
    from service.settings import load_settings

    base = load_settings()
    replica = serve.get_replica_context().replica_id.unique_id
    overrides: dict[str, Any] = {"upload_spool_dir": base.upload_dir / f"serve-{replica}"}
    if base.cluster_address is None:
        # The cluster this replica runs in; `runtime.connect` finds Ray initialised and joins nothing else.
        overrides["cluster_address"] = ray.get_runtime_context().gcs_address
    settings = load_settings(**overrides)
    logger.info(
        "Serve replica %s: building the RefineVAD app (uploads spooled in %s)", replica, settings.upload_dir
    )
    return create_app(settings)


@serve.deployment(
    name=DEPLOYMENT_NAME,
    num_replicas=2,
    # A WebSocket client is an ongoing request for as long as it stays: allow many per replica.
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
    # The lifespan's shutdown re-queues running jobs; give it the time the uvicorn replicas get.
    graceful_shutdown_timeout_s=30,
    # Replica start-up includes opening the database and starting the model load.
    health_check_timeout_s=60,
)
@serve.ingress(build_app)
class RefineVADIngress:
    """The ingress deployment: every route of the service, served by the app `build_app` made in this replica."""


app = RefineVADIngress.bind()
