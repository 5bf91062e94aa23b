"""`refinevad ensemble`: combine heads of one config trained with different seeds into one seed-ensemble checkpoint.

A weakly supervised head's quality moves with its seed (on Ped2 the shipped config's test AUC ranges 0.82-0.98
over five seeds); the members' mean snippet probability (model.ensemble) removes most of that spread. The result
is one checkpoint that `serve`, `analyze`, `evaluate` and `export` take like any other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.checkpoint import combine_checkpoints, file_sha256, load_checkpoint_payload


def run(args: argparse.Namespace) -> int:
    try:
        out = combine_checkpoints(args.checkpoints, args.out)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"refinevad ensemble: {exc}") from exc
    # Read back as written (no models built: `load_checkpoint` does that where the ensemble is used).
    ensemble = load_checkpoint_payload(out)["metadata"]["ensemble"]
    summary = {
        "checkpoint": str(out),
        "sha256": file_sha256(out),
        "members": ensemble["members"],
        "seeds": ensemble["seeds"],
    }
    print(json.dumps(summary, indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ensemble",
        help="combine trained checkpoints of one config (different seeds) into one seed-ensemble checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoints", type=Path, nargs="+", help="trained single-head checkpoints (2 or more)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the ensemble checkpoint to write")
    parser.set_defaults(func=run)
