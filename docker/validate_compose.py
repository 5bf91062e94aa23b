"""Validate Compose files against the Compose Specification's JSON schema, offline.

No Docker engine (nor the `docker compose` plugin) runs in CI, so this is the static stand-in for
`docker compose config`: the files are parsed as YAML and checked against the vendored schema
`docker/compose-spec.schema.json` (see docker/README.md for its source and license).

    python docker/validate_compose.py docker-compose.yml docker/compose.cpu.yml

Interpolation (`${VAR:-default}`) is left as is: the schema accepts strings wherever Compose interpolates.
Compose's merge tags `!reset` and `!override` (used by override files) are read as their plain values.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

logger = logging.getLogger("validate_compose")

SCHEMA_PATH = Path(__file__).resolve().parent / "compose-spec.schema.json"


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader that also accepts Compose's merge tags."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node) or None


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, _untagged)


def load_compose(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def compose_validator(schema_path: Path = SCHEMA_PATH) -> jsonschema_rs.Validator:
    schema = json.loads(schema_path.read_text())
    return jsonschema_rs.validator_for(schema)


def schema_errors(document: Any, validator: jsonschema_rs.Validator | None = None) -> list[str]:
    """One line per violation: where in the document, and what is wrong."""
    validator = validator or compose_validator()
    errors = []
    for error in validator.iter_errors(document):
        where = "/".join(str(part) for part in error.instance_path) or "(top level)"
        errors.append(f"{where}: {error.message}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate Compose files against the Compose Specification.")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    validator = compose_validator()
    failed = False
    for path in args.files:
        errors = schema_errors(load_compose(path), validator)
        for line in errors:
            logger.error("%s: %s", path, line)
        if errors:
            failed = True
        else:
            logger.info("%s: valid Compose file", path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
