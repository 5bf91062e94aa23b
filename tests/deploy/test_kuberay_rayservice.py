"""deploy/kuberay-rayservice.yaml, checked statically (no Kubernetes here): a RayService whose cluster runs the
project's Ray and image with GPUs in the worker group only, whose `serveConfigV2` is valid for Ray Serve's own
schema and imports the service's Serve application, and whose containers give every Ray process a valid cluster
configuration."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from tests.deploy.manifests import REPO, check_handover, check_ray_cluster, documents, groups, settings_of

MANIFEST = REPO / "deploy" / "kuberay-rayservice.yaml"


def _service() -> dict:
    docs = documents(MANIFEST)
    assert set(docs) == {"RayService"}
    assert docs["RayService"]["apiVersion"] == "ray.io/v1"
    return docs["RayService"]


def _serve_config() -> dict:
    # KubeRay takes serveConfigV2 as a string holding Serve's YAML config file.
    text = _service()["spec"]["serveConfigV2"]
    assert isinstance(text, str)
    return yaml.safe_load(text)


def test_cluster_runs_the_project_ray_and_image_with_gpus_on_workers_only() -> None:
    cluster = _service()["spec"]["rayClusterConfig"]
    check_ray_cluster(cluster)
    # RayService deploys the application through the dashboard: the head must run it.
    assert cluster["headGroupSpec"]["rayStartParams"].get("include-dashboard", "true") != "false"


def test_serve_config_is_valid_for_ray_serve_and_listens_on_the_serve_port() -> None:
    pytest.importorskip(
        "ray.serve", reason="Ray Serve's dependencies are not installed (pip install 'ray[serve]')"
    )
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(_serve_config())
    assert (config.http_options.host, config.http_options.port) == ("0.0.0.0", 8000)
    (app,) = config.applications
    assert app.route_prefix == "/"
    for group in groups(_service()["spec"]["rayClusterConfig"]):
        (container,) = group["template"]["spec"]["containers"]
        assert {"containerPort": 8000, "name": "serve"} in container["ports"]


def test_the_application_is_the_services_serve_ingress() -> None:
    (app,) = _serve_config()["applications"]
    module, attribute = app["import_path"].split(":")
    assert module == "service.cluster.serve_ingress" and attribute == "app"
    assert importlib.util.find_spec(module) is not None
    pytest.importorskip(
        "ray.serve", reason="Ray Serve's dependencies are not installed (pip install 'ray[serve]')"
    )
    from ray import serve

    from service.cluster import serve_ingress

    assert isinstance(serve_ingress.app, serve.Application)
    (deployment,) = app["deployments"]
    # The overrides name the deployment the module defines, and keep it off the GPUs.
    assert deployment["name"] == serve_ingress.DEPLOYMENT_NAME == serve_ingress.RefineVADIngress.name
    assert deployment["ray_actor_options"]["num_gpus"] == 0


def test_every_ray_container_has_a_valid_cluster_configuration() -> None:
    cluster = _service()["spec"]["rayClusterConfig"]
    for group in groups(cluster):
        (container,) = group["template"]["spec"]["containers"]
        # Inside the cluster the Serve replicas find it themselves; any address validates the rest.
        check_handover(cluster, settings_of(container, "auto").cluster_live_workers)
        assert "REFINEVAD_CLUSTER_ADDRESS" not in {item["name"] for item in container["env"]}
