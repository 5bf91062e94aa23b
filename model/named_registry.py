"""Lookup in the registries plugins add to by name (shift kernels, backbone runtimes), with one error format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, what: str, hint: str = "") -> T:
    """`registry[name]`; KeyError naming the registered ones (and `hint`, where to find more) otherwise."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry)) or "none"
        raise KeyError(f"unknown {what} {name!r}; registered: {known}{hint}") from None
