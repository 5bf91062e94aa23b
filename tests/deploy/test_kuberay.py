"""deploy/kuberay.yaml, checked statically (no Kubernetes here): the RayCluster runs the same Ray as the project
and the image, GPUs go to the worker group only, and the API replicas join that cluster's head service with a
valid cluster configuration."""

from __future__ import annotations

from tests.deploy.manifests import (
    REPO,
    check_handover,
    check_ray_cluster,
    documents,
    project_image,
    settings_of,
)

MANIFEST = REPO / "deploy" / "kuberay.yaml"


def test_manifest_is_a_raycluster_api_replicas_and_their_service() -> None:
    docs = documents(MANIFEST)
    assert set(docs) == {"RayCluster", "Deployment", "Service"}
    assert docs["RayCluster"]["apiVersion"] == "ray.io/v1"
    assert docs["Deployment"]["apiVersion"] == "apps/v1" and docs["Service"]["apiVersion"] == "v1"


def test_ray_version_images_and_gpus() -> None:
    docs = documents(MANIFEST)
    check_ray_cluster(docs["RayCluster"]["spec"])
    api = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert api["image"] == project_image()


def test_api_replicas_join_the_head_service_with_a_valid_configuration() -> None:
    docs = documents(MANIFEST)
    deployment = docs["Deployment"]
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    args = api["args"]
    address = args[args.index("--cluster") + 1]
    # KubeRay names the head's Service `<RayCluster name>-head-svc`; the GCS listens on 6379.
    assert address == f"{docs['RayCluster']['metadata']['name']}-head-svc:6379"
    check_handover(docs["RayCluster"]["spec"], settings_of(api, address).cluster_live_workers)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert (
        deployment["spec"]["template"]["metadata"]["labels"]
        == selector
        == docs["Service"]["spec"]["selector"]
    )
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"
