"""``fgvc pretrain``: re-create the shipped backbone (``fgvc.studies.pretrain``)."""

from __future__ import annotations

import argparse


def _pretrain(args: argparse.Namespace) -> int:
    from ..settings import flag_changes
    from ..studies.pretrain import PretrainSettings, pretrain

    settings = PretrainSettings.from_mapping(flag_changes(PretrainSettings, args))
    more = dict(resume=True) if args.resume else {}
    metrics = pretrain(args.out, settings, progress=not args.no_progress, overwrite=args.overwrite, **more)
    print(", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    print(f"weights and model card in {args.out}/")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc pretrain``."""
    from ..settings import add_flags
    from ..studies.pretrain import PretrainSettings

    pre = sub.add_parser(
        "pretrain",
        help="re-create fgvc's shipped backbone: pretraining on synthetic data (CPU, about an hour)",
        description="Pretrains fgvc_synth_vit_tiny on synthetic fine-grained data whose classes are disjoint "
        "from the demo's, with a CLS classification loss and a localization loss on the CLS-patch similarity "
        "(see fgvc/studies/pretrain.py), trained by fgvc's fit. Writes the weights, a model card, log.jsonl and "
        "fit's checkpoints (--resume continues a killed run).",
    )
    pre.add_argument("--out", default="runs/pretrain", help="output folder (default: %(default)s)")
    pre.add_argument(
        "--overwrite", action="store_true",
        help="replace the weights, card and log of an earlier pretraining in OUT (without it they are refused)",
    )
    pre.add_argument(
        "--resume", action="store_true",
        help="continue the pretraining saved in OUT (train_state.safetensors) with the same settings",
    )
    settings = pre.add_argument_group("settings", "each of fgvc.studies.pretrain.PretrainSettings")
    add_flags(settings, PretrainSettings)
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.set_defaults(func=_pretrain)
