"""The installed package's version, in one place below every layer (model, exporters, service, cli, bench)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("refinevad")
    except PackageNotFoundError:
        return "0+unknown"
