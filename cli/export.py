"""`refinevad export`: write a checkpoint's head as TorchScript or ONNX, with its metadata beside it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from exporters.metadata import DEFAULT_MAX_SNIPPETS, DEFAULT_OPSET, sidecar_path

log = logging.getLogger(__name__)

SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained head to TorchScript or ONNX",
        description=(
            "Export the RefineVAD head (MoTAR shift and Transformer, CORE, scorer) with a dynamic batch and "
            "time axis (T from 1 to --max-T). Metadata (config, categories, backbone, feature dim, opset) is "
            "embedded in the file and written beside it as <file>.json."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="RefineVAD checkpoint (.pt)")
    parser.add_argument("--format", choices=sorted(SUFFIXES), required=True, dest="export_format")
    parser.add_argument(
        "--out", type=Path, help="output file (default: the checkpoint's name with .ts/.onnx)"
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 18 or newer (default %(default)s)"
    )
    parser.add_argument(
        "--max-T",
        type=int,
        default=DEFAULT_MAX_SNIPPETS,
        dest="max_snippets",
        help="largest number of snippets per call the export accepts (default %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `refinevad --help` does not pay for loading torch.onnx and onnxscript.
    from exporters.onnx import MIN_OPSET, export_onnx
    from exporters.torchscript import export_torchscript
    from model.checkpoint import load_checkpoint

    if args.max_snippets < 2:
        log.error("--max-T must be at least 2")
        return 2
    if args.export_format == "onnx" and args.opset < MIN_OPSET:
        log.error("--opset must be at least %d (the lowest the ONNX exporter emits)", MIN_OPSET)
        return 2
    try:
        checkpoint = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    out: Path = args.out or args.checkpoint.with_suffix(SUFFIXES[args.export_format])
    if args.export_format == "onnx":
        metadata = export_onnx(checkpoint, out, opset=args.opset, max_snippets=args.max_snippets)
    else:
        metadata = export_torchscript(checkpoint, out, max_snippets=args.max_snippets)
    opset = f", opset {metadata.opset}" if metadata.opset is not None else ""
    print(
        f"wrote {out} ({args.export_format}{opset}, T 1..{metadata.max_snippets}, D {metadata.feature_dim})"
    )
    print(f"metadata {sidecar_path(out)}")
    return 0
