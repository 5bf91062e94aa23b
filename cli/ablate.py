"""`refinevad ablate`: the spec's ablation ladder and injection variants over several seeds, as a table."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cli.evaluate_scores import add_ground_truth_arguments, ground_truth_from_args
from cli.train import add_feature_arguments, feature_set_from_args, json_argument
from model.ablation import VARIANT_SETS, format_markdown, run_ablation, select_variants
from model.training import TrainConfig

log = logging.getLogger(__name__)


def _test_args(args: argparse.Namespace) -> argparse.Namespace:
    """The test-set view of the arguments, so the training-set reader can be reused."""
    test = argparse.Namespace(**vars(args))
    test.features, test.list = args.test_features, args.test_list
    test.root = args.test_root or args.root
    test.crops = args.test_crops
    return test


def run(args: argparse.Namespace) -> int:
    if (args.test_features is None) == (args.test_list is None):
        raise SystemExit("give exactly one of --test-features and --test-list")
    train_features = feature_set_from_args(args)
    test_args = _test_args(args)
    test_features = feature_set_from_args(test_args)
    truth = ground_truth_from_args(args, [r.name for r in test_features.records], args.test_features)
    train_config = TrainConfig.model_validate(json_argument(args.train_config))
    updates = {"epochs": args.epochs, "device": args.device}
    train_config = train_config.model_copy(update={k: v for k, v in updates.items() if v is not None})
    report = run_ablation(
        train_features,
        test_features,
        truth,
        args.out,
        seeds=[int(s) for s in args.seeds.split(",")],
        variants=select_variants(args.variants),
        train_config=TrainConfig.model_validate(train_config.model_dump()),
        model_overrides=json_argument(args.model_config),
        exclude_normal=args.exclude_normal,
        progress=not args.no_progress,
    )
    print(json.dumps(report, indent=1) if args.json else format_markdown(report))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="train + evaluate the ablation ladder and injection variants over seeds (Markdown/JSON table)",
        description=(
            "Variants: 'ladder' (base MLP+MIL, +motar, +injection-hard, full, full-no-gmm), 'injection' "
            "(inject-linear, inject-addnorm_ffn, inject-cross_attention), 'all', or comma-separated names. "
            "Writes OUT/ablation.md, OUT/ablation.json and OUT/runs/<variant>/seed<k>/; rerunning resumes."
        ),
    )
    add_feature_arguments(parser, "training")
    test = parser.add_argument_group("test set")
    test.add_argument("--test-features", type=Path, help="project feature store of the test videos")
    test.add_argument("--test-list", type=Path, help="public-release CSV list of the test videos")
    test.add_argument("--test-root", type=Path, help="local root of --test-list (default: --root)")
    test.add_argument("--test-crops", help="crop indices to use from --test-list (default: all listed)")
    add_ground_truth_arguments(parser, required=False, snippet_frames=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="ladder", help=f"sets {list(VARIANT_SETS)} or variant names")
    parser.add_argument("--seeds", default="42,43,44", help="comma-separated seeds (default 42,43,44)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device")
    parser.add_argument("--train-config", help="TrainConfig JSON text or file")
    parser.add_argument(
        "--model-config", help="RefineVADConfig fields shared by all variants (JSON text or file)"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of Markdown")
    parser.set_defaults(func=run)
