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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
