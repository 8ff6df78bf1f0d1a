"""``fgvc demo``: fine-tune every method from the shipped backbone on synthetic data (``fgvc.studies.demo``)."""

from __future__ import annotations

import argparse

from .common import _seed_list


def _positive_int(text: str) -> int:
    """``3`` -> 3; zero, negative or not an integer is a usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _demo(args: argparse.Namespace) -> int:
    from ..settings import flag_changes
    from ..studies.demo import DemoSettings, demo_settings, run_demo

    base = demo_settings(quick=args.quick, hard=args.hard)
    run_demo(
        settings=DemoSettings.from_mapping(flag_changes(DemoSettings, args), base=base),
        out_dir=args.out,
        seeds=args.seeds,
        device=args.device,
        progress=not args.no_progress,
        workers=args.workers,
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc demo``."""
    from ..settings import add_flags
    from ..studies.demo import FULL, HARD, DemoSettings

    demo = sub.add_parser(
        "demo",
        help="fine-tune every method from fgvc's shipped backbone on synthetic data (CPU, about 2.5 min)",
        description="Fine-tunes every method from fgvc's shipped pretrained backbone (fgvc_synth_vit_tiny) on "
        "the built-in synthetic fine-grained dataset, prints a results table (top-1, crop IoU, pointing game, "
        "params, time) and writes checkpoints and a figure of where each method looks.",
    )
    demo.add_argument("--quick", action="store_true", help="smaller data, one epoch (about a minute)")
    demo.add_argument(
        "--hard",
        action="store_true",
        help=f"the fine-grained regime: a 7 px detail on 128 px images (default: 31 px); methods "
        f"{','.join(HARD.methods)}",
    )
    settings = demo.add_argument_group("settings", "each of fgvc.studies.demo.DemoSettings (the defaults: the "
                                       "default demo's; --quick and --hard change some)")
    add_flags(settings, DemoSettings, [n for n in DemoSettings.names() if n != "seed"], defaults=FULL)
    demo.add_argument(
        "--seeds", type=_seed_list, default=None, help="comma-separated seeds, e.g. 0,1,2 (adds a mean +- std table)"
    )
    demo.add_argument(
        "--workers", type=_positive_int, default=None,
        help=f"methods trained at once, each in its own process at {FULL.threads} threads: the same table "
        f"(default: one per {FULL.threads} CPU cores, 1 on a GPU)",
    )
    demo.add_argument("--out", default="fgvc_demo", help="output folder (default: %(default)s)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
