"""``fgvc demo``: fine-tune every method from the shipped backbone on synthetic data (``fgvc.studies.demo``)."""

from __future__ import annotations

import argparse

from .common import _seed_list


def _demo(args: argparse.Namespace) -> int:
    from ..studies.demo import run_demo

    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    run_demo(
        quick=args.quick,
        hard=args.hard,
        out_dir=args.out,
        methods=methods,
        seeds=args.seeds,
        device=args.device,
        progress=not args.no_progress,
        backbone_lr_scale=args.backbone_lr_scale,
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc demo``."""
    from ..studies.demo import FULL, HARD

    demo = sub.add_parser(
        "demo",
        help="fine-tune every method from fgvc's shipped backbone on synthetic data (CPU, ~5 min)",
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
    demo.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated methods or variants such as glsim_top2 (default: {','.join(FULL.methods)})",
    )
    demo.add_argument(
        "--backbone-lr-scale", type=float, default=None,
        help=f"the pretrained backbone's learning rate over the new layers' (default: {FULL.backbone_lr_scale:g})",
    )
    demo.add_argument(
        "--seeds", type=_seed_list, default=None, help="comma-separated seeds, e.g. 0,1,2 (adds a mean +- std table)"
    )
    demo.add_argument("--out", default="fgvc_demo", help="output folder (default: %(default)s)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
