"""``fgvc data check``: verify a dataset folder before a run (``fgvc.data.check``)."""

from __future__ import annotations

import argparse


def _data_check(args: argparse.Namespace) -> int:
    from ..data import check_dataset

    options = {} if args.annotation_level is None else {"annotation_level": args.annotation_level}
    report = check_dataset(args.dataset, args.root, quick=args.quick, progress=not args.no_progress, **options)
    print(report)
    return 0 if report.ok else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc data`` and its ``check``."""
    from ..data.datasets import READERS

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
