"""Helpers of the static checks of deploy/ (no Kubernetes here): reading manifests, the project's locked Ray
version and image tag, the settings a container's environment makes, and the GPU placement of a RayCluster spec
(a `RayCluster`'s `spec`, or a `RayService`'s `rayClusterConfig`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from packaging.version import Version

from service.settings import ENV_PREFIX, ServiceSettings

REPO = Path(__file__).resolve().parents[2]


def documents(manifest: Path) -> dict[str, dict]:
    """The manifest's documents by kind; each has the four fields every Kubernetes object has."""
    docs = [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(doc), doc.get("kind")
    return {doc["kind"]: doc for doc in docs}


def locked(name: str) -> str:
    for line in (REPO / "docker" / "requirements.lock").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{name} is not in docker/requirements.lock")


def project_image() -> str:
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert version is not None
    return f"refinevad:{version.group(1)}"


def groups(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def check_ray_cluster(cluster: dict[str, Any]) -> None:
    """The project's Ray and image everywhere; GPUs in the one worker group only, the head has none."""
    assert Version(cluster["rayVersion"]) == Version(locked("ray"))
    images = {c["image"] for group in groups(cluster) for c in group["template"]["spec"]["containers"]}
    assert images == {project_image()}
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    (gpu_group,) = cluster["workerGroupSpecs"]
    (worker,) = gpu_group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert 1 <= gpu_group["minReplicas"] <= gpu_group["replicas"] <= gpu_group["maxReplicas"]
    (head,) = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]


def check_handover(cluster: dict[str, Any], live_workers: int) -> None:
    """Live workers are pinned one per node: as many as the GPU group keeps pods at least, and at least two, so a
    dying node's streams have another worker to go to at once."""
    (gpu_group,) = cluster["workerGroupSpecs"]
    assert live_workers == gpu_group["minReplicas"] >= 2, (live_workers, gpu_group["minReplicas"])


def settings_of(container: dict[str, Any], cluster_address: str) -> ServiceSettings:
    """The cluster-mode settings a container's `env` makes: every name is a setting, the database URL comes
    from a Secret (never a plain value), and the plain values validate."""
    env = {item["name"]: item for item in container["env"]}
    assert env["REFINEVAD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert "value" not in env["REFINEVAD_DATABASE_URL"]  # the password stays in a Secret
    fields = set(ServiceSettings.model_fields)
    assert all(name.removeprefix(ENV_PREFIX).lower() in fields for name in env)
    plain = {name: item["value"] for name, item in env.items() if "value" in item}
    return ServiceSettings(
        database_url="postgresql://u:p@db:5432/refinevad",
        cluster_address=cluster_address,
        **{name.removeprefix(ENV_PREFIX).lower(): value for name, value in plain.items()},
    )
