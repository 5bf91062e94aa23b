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
    parser.add_argument("checkpoint", type=Path, nargs="?", help="RefineVAD checkpoint (.pt)")
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
    clip = parser.add_argument_group(
        "CLIP image encoder", "with --clip-arch, export the CLIP image tower to ONNX instead of a head"
    )
    clip.add_argument("--clip-arch", help="open_clip architecture, e.g. ViT-B-16, ViT-L-14")
    clip.add_argument(
        "--clip-pretrained", default="openai", help="open_clip pretrained tag, or 'none' for random weights"
    )
    clip.add_argument("--clip-checkpoint", type=Path, help="local open_clip weights file (overrides the tag)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `refinevad --help` does not pay for loading torch.onnx and onnxscript.
    from exporters.onnx import MIN_OPSET, export_onnx
    from exporters.torchscript import export_torchscript
    from model.checkpoint import load_checkpoint

    if args.clip_arch:
        return run_clip(args)
    if args.checkpoint is None:
        log.error("give a CHECKPOINT to export (or --clip-arch for the CLIP image encoder)")
        return 2
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


def run_clip(args: argparse.Namespace) -> int:
    from exporters.clip_onnx import export_clip_backbone
    from exporters.onnx import MIN_OPSET
    from model.backbones.registry import BackboneConfig, load_backbone

    if args.export_format != "onnx":
        log.error("the CLIP image encoder exports to ONNX only")
        return 2
    if args.opset < MIN_OPSET:
        log.error("--opset must be at least %d", MIN_OPSET)
        return 2
    options: dict[str, object] = {"name": "clip", "clip_arch": args.clip_arch, "precision": "fp32"}
    options["clip_pretrained"] = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained
    if args.clip_checkpoint is not None:
        options["clip_checkpoint"] = args.clip_checkpoint
    try:
        backbone = load_backbone(BackboneConfig.model_validate(options), "cpu")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    out: Path = args.out or Path(f"clip-{args.clip_arch}.onnx")
    metadata = export_clip_backbone(backbone, out, opset=args.opset)
    print(
        f"wrote {out} (CLIP {metadata.backbone.key()}, opset {metadata.opset}, input [N, 3, "
        f"{metadata.image_size[0]}, {metadata.image_size[1]}] -> [N, {metadata.embedding_dim}])"
    )
    return 0
