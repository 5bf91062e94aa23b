"""A real Ray cluster of several nodes on this machine, all on loopback, for the cluster tests and benchmark.

Each node is its own `ray start --block` process in a session of its own, so `kill_node` can kill everything that
node runs (raylet, its workers and actors) by PID, as a machine dying would. Ray rewrites 127.0.0.1 to the
machine's network address unless told otherwise: the head and the drivers run with
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (single-machine mode, which keeps to loopback), and the other nodes start
through a wrapper that turns off Ray's localhost rewriting (their own setting has to allow joining a cluster).
`listening_addresses` lets a test check that nothing listens beyond loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.rtsp_server import free_port

# Environment of the head and of every driver (API replicas, tests): Ray stays on loopback.
# Token authentication off explicitly: otherwise Ray turns it on whenever ~/.ray/auth_token exists.
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
# A dead node is noticed within about a second (the default takes ~13 s).
FAST_FAILURE_DETECTION = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "2",
}
OBJECT_STORE_BYTES = 80 * 1024 * 1024

_JOIN_WRAPPER = """
import sys
import ray._private.services as services
services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1: this test cluster is one machine
from ray.scripts.scripts import main
sys.argv = ["ray", *sys.argv[1:]]
main()
"""


class RayNode:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, name: str, node_manager_port: int) -> None:
        self.proc = proc
        self.log = log
        self.name = name
        self.node_manager_port = node_manager_port

    def pids(self) -> list[int]:
        """Every process of this node (all share the session its `ray start` began)."""
        sid = self.proc.pid
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: the session id
                    found.append(int(entry.name))
        return found

    def kill(self) -> list[int]:
        """SIGKILL every process of the node at once; returns their PIDs."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            # `ray start --block` rarely exits on SIGTERM before its children do (a 20 s wait ran out on every
            # node, 40 s per test module): a short grace for its logs, then the kill that ends it anyway.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(3)
        self.kill()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class RayCluster:
    """A head node and any number of worker nodes; `address` is what drivers pass to `ray.init`."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._temp_dirs: list[Path] = []
        self.extra_env = dict(env or {})
        self.nodes: list[RayNode] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def driver_env(self) -> dict[str, str]:
        return {**os.environ, **LOOPBACK_ENV}

    def _start(self, name: str, args: list[str], env: dict[str, str], wrapper: bool) -> RayNode:
        temp = Path("/tmp") / f"ray-{os.getpid()}-{name}-{self.port}"  # short: Ray's socket paths are limited
        self._temp_dirs.append(temp)
        log = self.root / f"ray-{name}.log"
        command = (
            [sys.executable, "-c", _JOIN_WRAPPER] if wrapper else [str(Path(sys.executable).parent / "ray")]
        )
        node_manager_port = free_port()
        common = [
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--node-manager-port={node_manager_port}",
            f"--object-manager-port={free_port()}",
        ]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*command, *common, *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = RayNode(proc, log, name, node_manager_port)
        self.nodes.append(node)
        return node

    def start_head(
        self, num_cpus: int = 1, num_gpus: int = 0, resources: dict[str, float] | None = None
    ) -> RayNode:
        env = {**os.environ, **LOOPBACK_ENV, **FAST_FAILURE_DETECTION, **self.extra_env}
        args = [
            "--head",
            f"--port={self.port}",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            "--include-dashboard=false",
            f"--resources={json.dumps(resources or {})}",
        ]
        node = self._start("head", args, env, wrapper=False)
        self.wait_nodes(1)
        return node

    def add_node(
        self, name: str, num_cpus: int = 1, num_gpus: int = 0, resources: dict[str, float] | None = None
    ) -> RayNode:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **self.extra_env})
        args = [
            f"--address={self.address}",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            f"--resources={json.dumps(resources or {})}",
        ]
        node = self._start(name, args, env, wrapper=True)
        self.wait_nodes(sum(1 for n in self.nodes if n.proc.poll() is None))
        return node

    def _wait_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Ray head did not listen on {self.address} in {timeout}s:\n{self._logs()}"
                )
            time.sleep(0.2)

    def _logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.tail()}" for n in self.nodes)

    def _check_alive(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is not None and node.proc.returncode != -signal.SIGKILL:
                raise RuntimeError(f"ray node {node.name} exited ({node.proc.returncode}):\n{node.tail()}")

    def wait_nodes(self, count: int, timeout: float = 120.0) -> None:
        """Until exactly `count` nodes are alive (one driver process polls the cluster)."""
        self._wait_port(timeout)
        script = (
            "import sys, time, ray\n"
            f"ray.init(address='{self.address}', log_to_driver=False)\n"
            f"deadline = time.monotonic() + {timeout}\n"
            f"while len([n for n in ray.nodes() if n['Alive']]) != {count}:\n"
            "    if time.monotonic() > deadline: sys.exit(1)\n"
            "    time.sleep(0.3)\n"
        )
        try:
            result = subprocess.run(
                [sys.executable, "-c", script],
                env=self.driver_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            result = None
        if result is None or result.returncode != 0:
            self._check_alive()
            detail = result.stderr[-2000:] if result is not None else ""
            raise RuntimeError(
                f"the Ray cluster did not reach {count} nodes in {timeout}s:\n{detail}\n{self._logs()}"
            )

    def driver(self, code: str, timeout: float = 90.0) -> object:
        """Run `code` in a driver process of this cluster (loopback settings, namespace `refinevad`); it sets
        `result`, which comes back through JSON. A separate process: Ray reads its settings at import."""
        script = (
            "import json, ray\n"
            f"ray.init(address='{self.address}', namespace='refinevad', log_to_driver=False)\n"
            f"{code}\n"
            "print('RESULT ' + json.dumps(result))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=self.driver_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        for line in reversed(out.stdout.splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line.removeprefix("RESULT "))
        raise RuntimeError(f"driver script failed ({out.returncode}):\n{out.stderr[-3000:]}")

    def node_id_of(self, node: RayNode) -> str:
        """The Ray node id of one of this cluster's nodes."""
        ports = self.driver("result = {n['NodeManagerPort']: n['NodeID'] for n in ray.nodes() if n['Alive']}")
        assert isinstance(ports, dict)
        return ports[str(node.node_manager_port)]

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        for temp in self._temp_dirs:
            # The nodes' logs (raylet, GCS, every worker and actor) stay with the test's files for a post-mortem.
            with contextlib.suppress(OSError):
                logs = next(temp.glob("session_2*/logs"))
                shutil.copytree(
                    logs, self.root / f"ray-logs-{temp.name}", ignore=shutil.ignore_patterns("*.sock")
                )
            shutil.rmtree(temp, ignore_errors=True)


def listening_addresses(pids: list[int]) -> set[str]:
    """Local addresses the given processes listen on (TCP), from `ss`."""
    result = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, timeout=30)
    wanted = {f"pid={pid}," for pid in pids}
    found = set()
    for line in result.stdout.splitlines():
        if any(tag in line for tag in wanted):
            found.add(line.split()[3].rsplit(":", 1)[0])
    return found


def peer_addresses(pids: list[int]) -> set[str]:
    """Remote addresses the given processes have TCP connections to, from `ss`."""
    result = subprocess.run(["ss", "-Htnp"], capture_output=True, text=True, timeout=30)
    wanted = {f"pid={pid}," for pid in pids}
    found = set()
    for line in result.stdout.splitlines():
        if any(tag in line for tag in wanted):
            found.add(line.split()[4].rsplit(":", 1)[0])
    return found
