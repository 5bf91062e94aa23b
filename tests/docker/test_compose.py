"""docker-compose.yml, checked statically: Compose Specification schema, GPU, volumes, env, demo profile."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import ENV_PREFIX, ServiceSettings
from tests.docker.dockerfile_syntax import healthcheck_command, parse_dockerfile

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
CPU_OVERRIDE = REPO / "docker" / "compose.cpu.yml"
VALIDATOR = REPO / "docker" / "validate_compose.py"
ENV_EXAMPLE = REPO / "docker" / "refinevad.env.example"
# sha256 of compose-spec.json as shipped in check-jsonschema 0.39.0 (see docker/README.md).
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"


def _with_defaults(value: str) -> str:
    """Compose interpolation with nothing set: `${VAR:-default}` becomes `default`."""
    return re.sub(r"\$\{[A-Za-z0-9_]+:-([^}]*)\}", r"\1", value)


def _load_validator_module():
    spec = importlib.util.spec_from_file_location("validate_compose", VALIDATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate_compose = _load_validator_module()


@pytest.fixture(scope="module")
def compose():
    return validate_compose.load_compose(COMPOSE)


@pytest.fixture(scope="module")
def service(compose):
    return compose["services"]["refinevad"]


def test_vendored_schema_is_the_published_one():
    assert hashlib.sha256(validate_compose.SCHEMA_PATH.read_bytes()).hexdigest() == SCHEMA_SHA256


@pytest.mark.parametrize("path", [COMPOSE, CPU_OVERRIDE], ids=lambda p: p.name)
def test_compose_files_validate_against_the_compose_spec(path):
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_schema_rejects_what_compose_would_reject(compose):
    """Guards against a validator that accepts anything: a misspelt key and a malformed GPU request fail."""
    bad = {"services": {"refinevad": {**compose["services"]["refinevad"], "restrat": "always"}}}
    errors = validate_compose.schema_errors(bad)
    assert any("restrat" in line for line in errors), errors
    gpu_without_capabilities = {"devices": [{"driver": "nvidia", "count": 1}]}
    no_capabilities = {
        "services": {
            "x": {"image": "a:1", "deploy": {"resources": {"reservations": gpu_without_capabilities}}}
        }
    }
    assert any("capabilities" in line for line in validate_compose.schema_errors(no_capabilities))


def test_the_validator_cli_fails_on_an_invalid_file(tmp_path):
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  a:\n    image: x:1\n    ports: 8000\n")
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "ports" in result.stderr


def test_service_builds_the_dockerfile_and_reserves_a_gpu(service):
    build = service["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == (REPO / "docker" / "Dockerfile")
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices
    assert service["restart"] == "unless-stopped"


def test_cpu_override_drops_the_gpu_and_builds_the_cpu_variant():
    override = validate_compose.load_compose(CPU_OVERRIDE)["services"]["refinevad"]
    assert override["deploy"] == {}  # `!reset {}`
    assert override["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    dockerfile_args = {
        ins.arguments.partition("=")[0] for ins in parse_dockerfile(REPO / "docker" / "Dockerfile").all("ARG")
    }
    assert set(override["build"]["args"]) <= dockerfile_args
    assert "!reset" in CPU_OVERRIDE.read_text()


def test_port_volumes_and_healthcheck_match_the_image(service):
    assert any(port.endswith(":8000") for port in service["ports"])
    targets = {_with_defaults(volume).split(":")[1] for volume in service["volumes"]}
    assert {"/data", "/models", "/cache", "/config"} <= targets
    dockerfile = parse_dockerfile(REPO / "docker" / "Dockerfile")
    (image_check,) = [ins for ins in dockerfile.final_stage() if ins.keyword == "HEALTHCHECK"]
    assert service["healthcheck"]["test"] == ["CMD", *healthcheck_command(image_check)]


def test_api_key_comes_from_an_env_file_that_git_ignores(service):
    (env_file,) = service["env_file"]
    assert env_file == {"path": "docker/refinevad.env", "required": True}
    assert ENV_EXAMPLE.exists()
    ignored = subprocess.run(["git", "check-ignore", "-q", env_file["path"]], cwd=REPO, check=False)
    assert ignored.returncode == 0, "docker/refinevad.env (holds API keys) is not git-ignored"
    example = ENV_EXAMPLE.read_text()
    assert re.search(r"^REFINEVAD_API_KEYS=", example, re.MULTILINE)


def test_service_environment_names_are_settings(service):
    """Container variables with the service's prefix must be real settings: a typo is silently ignored."""
    names = set(re.findall(r"^#?\s*(REFINEVAD_[A-Z_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    names |= {name for name in service.get("environment", {}) if name.startswith(ENV_PREFIX)}
    assert "REFINEVAD_API_KEYS" in names
    fields = set(ServiceSettings.model_fields)
    unknown = sorted(name for name in names if name.removeprefix(ENV_PREFIX).lower() not in fields)
    assert not unknown


def test_demo_profile_serves_and_registers_an_rtsp_camera(compose):
    services = compose["services"]
    demo = {name for name, spec in services.items() if "demo" in spec.get("profiles", [])}
    assert demo == {"rtsp", "demo-register"}
    assert "profiles" not in services["refinevad"]  # the service itself always starts
    register = services["demo-register"]
    assert register["depends_on"]["refinevad"]["condition"] == "service_healthy"
    stream_url = register["environment"]["DEMO_STREAM_URL"]
    assert stream_url == "rtsp://rtsp:8554/demo"
    mediamtx_config = (REPO / "docker" / "demo" / "mediamtx.yml").read_text()
    assert "  demo:\n" in mediamtx_config and "$MTX_PATH" in mediamtx_config
    # Images are pinned.
    for name in demo:
        image = services[name]["image"]
        assert re.search(r":\d+\.\d+\.\d+", image), image


def test_bind_mounted_repository_files_exist(compose):
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and "${" not in source:
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_cluster_profile_is_postgres_a_ray_head_a_gpu_worker_and_an_api_replica(compose, service):
    services = compose["services"]
    cluster = {name for name, spec in services.items() if "cluster" in spec.get("profiles", [])}
    assert cluster == {"postgres", "ray-head", "ray-gpu-worker", "refinevad-cluster"}
    head, worker, api = services["ray-head"], services["ray-gpu-worker"], services["refinevad-cluster"]
    # Ray nodes run the service's own image (the same Ray and the same code as the API replica).
    assert head["image"] == worker["image"] == api["image"] == service["image"]
    assert head["entrypoint"] == worker["entrypoint"] == ["ray"]
    assert {"start", "--head", "--block", "--port=6379", "--num-gpus=0"} <= set(head["command"])
    assert "--address=ray-head:6379" in worker["command"] and "--block" in worker["command"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices
    assert "deploy" not in head
    # The replica joins that head and keeps its state in that PostgreSQL server.
    command = api["command"]
    assert command[command.index("--cluster") + 1] == "ray-head:6379"
    database_url = _with_defaults(api["environment"]["REFINEVAD_DATABASE_URL"])
    assert database_url == "postgresql://refinevad:@postgres:5432/refinevad"
    postgres = services["postgres"]
    env = postgres["environment"]
    assert (
        database_url.endswith(f"@postgres:5432/{env['POSTGRES_DB']}") and env["POSTGRES_USER"] == "refinevad"
    )
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert re.search(r":\d+\.\d+", postgres["image"]), postgres["image"]
    fields = set(ServiceSettings.model_fields)
    for name in api["environment"]:
        assert name.removeprefix(ENV_PREFIX).lower() in fields, name
    # What the replica gets is a valid cluster configuration.
    settings = ServiceSettings(
        database_url=database_url.replace(":@", ":pw@"),
        cluster_address=command[command.index("--cluster") + 1],
    )
    assert settings.cluster_address == "ray-head:6379"
    assert set(compose["volumes"]) >= {"refinevad-postgres", "refinevad-cluster-data"}
