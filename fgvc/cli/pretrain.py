"""``fgvc pretrain``: re-create the shipped backbone (``fgvc.studies.pretrain``)."""

from __future__ import annotations

import argparse

from .common import _integers


def _pretrain(args: argparse.Namespace) -> int:
    from dataclasses import fields, replace

    from ..studies.pretrain import PretrainSettings, pretrain

    settings = PretrainSettings()
    changes = {}
    for f in fields(PretrainSettings):
        value = getattr(args, f.name, None)
        if value is not None:
            changes[f.name] = tuple(value) if f.name == "detail_sides" else value
    settings = replace(settings, **changes)
    metrics = pretrain(args.out, settings, progress=not args.no_progress, overwrite=args.overwrite)
    print(", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    print(f"weights and model card in {args.out}/")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc pretrain``."""
    from ..studies.pretrain import PretrainSettings

    defaults = PretrainSettings()
    pre = sub.add_parser(
        "pretrain",
        help="re-create fgvc's shipped backbone: pretraining on synthetic data (CPU, about an hour)",
        description="Pretrains fgvc_synth_vit_tiny on synthetic fine-grained data whose classes are disjoint "
        "from the demo's, with a CLS classification loss and a localization loss on the CLS-patch similarity "
        "(see fgvc/studies/pretrain.py). Writes the weights, a model card and log.jsonl.",
    )
    pre.add_argument("--out", default="runs/pretrain", help="output folder (default: %(default)s)")
    pre.add_argument(
        "--overwrite", action="store_true",
        help="replace the weights, card and log of an earlier pretraining in OUT (without it they are refused)",
    )
    pre.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default: {defaults.steps})")
    pre.add_argument("--batch-size", type=int, default=None, help=f"(default: {defaults.batch_size})")
    pre.add_argument("--lr", type=float, default=None, help=f"peak AdamW learning rate (default: {defaults.lr})")
    pre.add_argument("--seed", type=int, default=None, help=f"(default: {defaults.seed})")
    pre.add_argument(
        "--images-per-side", type=int, default=None, help=f"images per detail size (default: {defaults.images_per_side})"
    )
    pre.add_argument(
        "--detail-sides",
        type=_integers,
        default=None,
        help=f"comma-separated detail sides in px (default: {','.join(map(str, defaults.detail_sides))})",
    )
    pre.add_argument(
        "--loc-weight", type=float, default=None, help=f"weight of the localization loss (default: {defaults.loc_weight})"
    )
    pre.add_argument(
        "--rollout-weight", type=float, default=None,
        help=f"weight of the attention-rollout localization term (default: {defaults.rollout_weight})",
    )
    pre.add_argument(
        "--init", default=None,
        help="start from these backbone weights (a .safetensors written by fgvc pretrain) instead of at random",
    )
    pre.add_argument("--threads", type=int, default=None, help=f"CPU threads (default: {defaults.threads})")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.set_defaults(func=_pretrain)
