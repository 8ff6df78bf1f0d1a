"""``fgvc convert``: an official GLSim / TransFG checkpoint as an fgvc checkpoint (``fgvc.storage.convert``)."""

from __future__ import annotations

import argparse


def _convert(args: argparse.Namespace) -> int:
    """``fgvc convert IN OUT``: an official GLSim / TransFG checkpoint as an fgvc ``.safetensors``."""
    from ..storage.checkpoint import load_model, save_model

    model = load_model(args.input, format=args.format)
    path = save_model(model, args.output, extra=dict(converted_from=str(args.input)))
    options = ", ".join(f"{k}={v}" for k, v in model.config["options"].items())
    h, w = model.img_size
    print(f"{model.method} ({options or 'default options'}) on {model.config['backbone']} "
          f"{model.config['backbone_kwargs']}, {h}x{w} px, {model.num_classes} classes -> {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc convert``."""
    from ..storage.convert import official_formats

    conv = sub.add_parser(
        "convert",
        help="an official GLSim or TransFG checkpoint (.pth) as an fgvc checkpoint (.safetensors)",
        description="Reads a checkpoint written by the official GLSim trainer or TransFG's train.py (safely: "
        "torch.load(weights_only=True), only argparse.Namespace allowed), rebuilds the same model in fgvc from "
        "its recorded settings and tensor shapes, and writes it as an fgvc .safetensors with the same outputs.",
    )
    conv.add_argument("input", help="the official .pth / .bin file")
    conv.add_argument("output", help="the fgvc .safetensors to write")
    conv.add_argument(
        "--format", default=None, choices=list(official_formats()),  # the methods' declared formats, plugins' too
        help="the input's format (default: detected from its keys)",
    )
    conv.set_defaults(func=_convert)
