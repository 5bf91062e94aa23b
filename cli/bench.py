"""`refinevad bench`: the benchmark suite (head, backbone, end to end, live, scaling, parity) into one results file."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

log = logging.getLogger(__name__)

PART_NAMES = ("head", "backbone", "e2e", "live", "scaling", "parity")


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PART_NAMES))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PART_NAMES)}"
        )
    return parts


def _sized(preset: Any, overrides: list[str]) -> Any:
    """The preset with `FIELD=VALUE` overrides (VALUE as JSON, else as text), validated like the preset."""
    values = preset.model_dump()
    for item in overrides:
        field, sep, text = item.partition("=")
        if not sep or field not in values:
            raise SystemExit(f"--size {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(values)}")
        try:
            values[field] = json.loads(text)
        except json.JSONDecodeError:
            values[field] = text
    try:
        return type(preset).model_validate(values)
    except ValidationError as exc:
        raise SystemExit(f"--size: {exc}") from None


def _quiet_open_clip(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "open_clip" not in record.pathname


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite and write one results file (JSON + Markdown)",
        description=(
            "Measure the head (eager / TorchScript / ONNX Runtime, shift, MoTAR size), the backbones (images/s "
            "per precision and batch, where a video's time goes), POST /analyze end to end, the live streams "
            "sustained under 2 s p95 latency, scaling with W and streams, and every accelerated path's parity "
            "with its reference. Writes "
            "bench-<mode>-<device>-<time>.json and .md under --out."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (~3 minutes on a 2-core CPU)")
    parser.add_argument(
        "--parts",
        type=_parts,
        default=list(PART_NAMES),
        help=f"comma-separated subset of {','.join(PART_NAMES)} (default: all)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one size of the preset, e.g. live_budget_s=60 or clip_archs='[\"ViT-B-16\"]' (JSON "
        "values; repeatable; fields: bench.suite.Sizes)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results directory (default: bench/results in the checkout)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # open_clip logs every step of model creation at INFO on the root logger: keep its warnings only.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_open_clip)
    from bench.suite import DEFAULT_OUT, Sizes, SuiteConfig, run_suite

    config = SuiteConfig(
        parts=args.parts,
        device=args.device,
        out_dir=args.out or DEFAULT_OUT,
        quick=args.quick,
        sizes=_sized(Sizes.quick() if args.quick else Sizes.full(), args.size),
    )
    results, json_path, md_path = run_suite(config)
    print(md_path.read_text())
    print(f"results: {json_path}\n         {md_path}")
    if results["errors"]:
        log.error("parts failed: %s", ", ".join(results["errors"]))
        return 1
    return 0
