"""Cluster mode end to end (marker `cluster`): a two-node Ray cluster on loopback, a real PostgreSQL server, two
API replicas and the real RTSP camera."""

from __future__ import annotations

import pytest
from websockets.sync.client import connect

from tests.cluster.conftest import ClusterStack
from tests.ray_cluster import listening_addresses
from tests.reliability.conftest import wait_for
from tests.service.conftest import ServerProcess
from tests.service.live.service_process import next_snippets

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def open_live(server: ServerProcess, stream_id: str, since: int | None = None):
    query = f"?since={since}" if since is not None else ""
    ws_url = server.url.replace("http://", "ws://")
    return connect(
        f"{ws_url}/streams/{stream_id}/live{query}", additional_headers=server.headers, open_timeout=10
    )


def test_registrations_are_shared_and_any_replica_serves_any_stream(stack: ClusterStack) -> None:
    a, b = stack.replicas
    with a.client() as ca, b.client() as cb:
        created = ca.post("/streams", json={"url": stack.camera.url, "name": "gate"})
        assert created.status_code == 201, created.text
        stream = created.json()
        assert [s["id"] for s in cb.get("/streams").json()["items"]] == [stream["id"]]
        assert cb.get(f"/streams/{stream['id']}").json()["name"] == "gate"
        with open_live(b, stream["id"]) as ws:
            finals = next_snippets(ws, 2, timeout=90, status="final")
        assert [m["index"] for m in finals] == [finals[0]["index"], finals[0]["index"] + 1]
        wait_for(lambda: cb.get(f"/streams/{stream['id']}").json()["state"] == "live", 30, "live state via b")
        assert ca.delete(f"/streams/{stream['id']}").status_code == 204
        assert cb.get(f"/streams/{stream['id']}").status_code == 404
        assert cb.get("/streams").json()["total"] == 0
    ray_pids = stack.head.pids() + stack.worker.pids()
    addresses = listening_addresses(ray_pids)
    assert addresses and addresses <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}, addresses
