"""deploy/kuberay.yaml, checked statically (no Kubernetes here): the RayCluster runs the same Ray as the project
and the image, GPUs go to the worker group only, and the API replicas join that cluster's head service with a
valid cluster configuration."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from packaging.version import Version

from service.settings import ENV_PREFIX, ServiceSettings

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "kuberay.yaml"


def _documents() -> dict[str, dict]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(doc), doc.get("kind")
    return {doc["kind"]: doc for doc in docs}


def _locked(name: str) -> str:
    for line in (REPO / "docker" / "requirements.lock").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{name} is not in docker/requirements.lock")


def test_manifest_is_a_raycluster_api_replicas_and_their_service() -> None:
    docs = _documents()
    assert set(docs) == {"RayCluster", "Deployment", "Service"}
    assert docs["RayCluster"]["apiVersion"] == "ray.io/v1"
    assert docs["Deployment"]["apiVersion"] == "apps/v1" and docs["Service"]["apiVersion"] == "v1"


def test_ray_version_and_images_match_the_project() -> None:
    cluster = _documents()["RayCluster"]
    assert Version(cluster["spec"]["rayVersion"]) == Version(_locked("ray"))
    images = {
        container["image"]
        for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
        for container in group["template"]["spec"]["containers"]
    }
    api = _documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert images == {api["image"]} == {f"refinevad:{version}"}


def test_gpus_go_to_the_worker_group_only() -> None:
    spec = _documents()["RayCluster"]["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    (gpu_group,) = spec["workerGroupSpecs"]
    (worker,) = gpu_group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert 1 <= gpu_group["minReplicas"] <= gpu_group["replicas"] <= gpu_group["maxReplicas"]
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]


def test_api_replicas_join_the_head_service_with_a_valid_configuration() -> None:
    docs = _documents()
    deployment = docs["Deployment"]
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    args = api["args"]
    address = args[args.index("--cluster") + 1]
    # KubeRay names the head's Service `<RayCluster name>-head-svc`; the GCS listens on 6379.
    assert address == f"{docs['RayCluster']['metadata']['name']}-head-svc:6379"
    env = {item["name"]: item for item in api["env"]}
    assert env["REFINEVAD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert "value" not in env["REFINEVAD_DATABASE_URL"]  # the password stays in a Secret
    fields = set(ServiceSettings.model_fields)
    assert all(name.removeprefix(ENV_PREFIX).lower() in fields for name in env)
    plain = {name: item["value"] for name, item in env.items() if "value" in item}
    settings = ServiceSettings(
        database_url="postgresql://u:p@db:5432/refinevad",
        cluster_address=address,
        **{name.removeprefix(ENV_PREFIX).lower(): value for name, value in plain.items()},
    )
    assert settings.cluster_live_workers >= 1
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert (
        deployment["spec"]["template"]["metadata"]["labels"]
        == selector
        == docs["Service"]["spec"]["selector"]
    )
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"
