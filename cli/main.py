"""The `refinevad` command line: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from model.version import package_version

# Each name is a module `cli.<name>` that defines `register(subparsers)`; the parser it adds sets `func`.
COMMANDS = (
    "serve",
    "analyze",
    "extract",
    "train",
    "calibrate",
    "ensemble",
    "evaluate",
    "evaluate_scores",
    "ablate",
    "export",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refinevad",
        description="RefineVAD: real-time video anomaly detection (model, training, evaluation, service).",
    )
    parser.add_argument("--version", action="version", version=f"refinevad {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
