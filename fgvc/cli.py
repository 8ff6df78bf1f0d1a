"""The ``fgvc`` command (also ``python -m fgvc``): the only place that parses arguments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    run_demo(
        quick=args.quick, out_dir=args.out, methods=methods, device=args.device, progress=not args.no_progress
    )
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from .data import check_dataset

    options = {} if args.annotation_level is None else {"annotation_level": args.annotation_level}
    report = check_dataset(args.dataset, args.root, quick=args.quick, progress=not args.no_progress, **options)
    print(report)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fgvc", description="Fine-grained visual categorization with vision transformers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train a plain ViT and GLSim on synthetic fine-grained data and compare them (CPU, ~10 min)",
        description="Trains a tiny plain ViT and GLSim from scratch on the built-in synthetic fine-grained "
        "dataset, prints a results table and writes checkpoints and a figure of GLSim's crops.",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="smaller data and fewer epochs, under 2 minutes: checks the whole pipeline, too short for "
        "the models to learn the task",
    )
    demo.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods to compare (default: vit,glsim; e.g. vit,glsim,dcal,transfg)",
    )
    demo.add_argument("--out", default="fgvc_demo", help="output folder (default: %(default)s)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    from .data.datasets import READERS

    data = sub.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser(
        "check",
        help="verify a dataset folder before a run (counts, missing and unreadable files)",
        description="Parses the dataset's annotations as training does and opens every listed image; prints "
        "images per split and class and every problem found; exits with 1 when there are problems.",
    )
    check.add_argument("root", help="the dataset folder (e.g. data/CUB_200_2011)")
    check.add_argument("--dataset", required=True, choices=sorted(READERS), help="dataset layout")
    check.add_argument(
        "--quick", action="store_true", help="only verify image headers (and JPEG end markers), do not decode"
    )
    check.add_argument(
        "--annotation-level", default=None, help="aircraft only: variant, family or manufacturer"
    )
    check.add_argument("--no-progress", action="store_true", help="no progress bars")
    check.set_defaults(func=_data_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
