"""``fgvc export``: a checkpoint as a Hugging Face folder, a timm state dict, a Hub upload (``fgvc.storage.hub``)
or an ONNX file (``fgvc.storage.onnx``)."""

from __future__ import annotations

import argparse


def _export(args: argparse.Namespace) -> int:
    """``fgvc export``: a Hub folder (save_pretrained), a plain timm state dict (--timm), or an upload (--push)."""
    from ..storage.checkpoint import load_model
    from ..storage.hub import checkpoint_card_info, export_timm, push_to_hub, save_pretrained

    if args.opset is not None and not args.onnx:
        raise ValueError("--opset is for --onnx")
    model = load_model(args.checkpoint)
    if args.onnx:
        return _export_onnx(model, args)
    card = checkpoint_card_info(args.checkpoint)
    if args.timm:
        path, call = export_timm(model, args.out)
        print(f"timm weights written to {path}; load them with:\n  {call}")
    elif args.push:
        info = push_to_hub(model, args.out, private=args.private, **card)
        print(f"uploaded to https://huggingface.co/{args.out} ({getattr(info, 'oid', '') or 'done'})")
    else:
        folder = save_pretrained(model, args.out, **card)
        print(f"model.safetensors, config.json and README.md written to {folder}/ (fgvc.from_pretrained({str(folder)!r}))")
    return 0


def _export_onnx(model, args: argparse.Namespace) -> int:
    """``fgvc export CHECKPOINT OUT.onnx --onnx``: the evaluation forward, with the run's test resize recorded."""
    from ..storage.onnx import export_onnx
    from ..studies.recipe import test_transform_for

    resize = test_transform_for(model, args.checkpoint).transforms[0].size  # v2.Resize: [short side] or [h, w]
    path = export_onnx(model, args.out, opset=args.opset, resize=resize[0] if len(resize) == 1 else tuple(resize))
    print(f"ONNX written to {path} (input images (B, 3, {model.img_size[0]}, {model.img_size[1]}); "
          f"run it with: fgvc predict --onnx {path} IMAGES...)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc export``."""
    exp = sub.add_parser(
        "export",
        help="a checkpoint as a Hugging Face folder (model card), a plain timm state dict, or a Hub upload",
        description="Writes an fgvc checkpoint for use elsewhere. Default: a folder with model.safetensors, "
        "config.json (with the timm-style pretrained_cfg) and a README.md model card (the dataset and test "
        "metrics of the run when fgvc train wrote it), read back by fgvc.from_pretrained. --timm: the backbone "
        "(and the plain vit's classifier) as a .safetensors that timm.create_model(name, checkpoint_path=...) "
        "loads. --push: upload the folder to the Hub repository OUT (user/repo). --onnx: the evaluation forward "
        "as an ONNX file OUT.onnx with a dynamic batch axis (outputs logits, and boxes for GLSim; class names "
        "and the test transform in its metadata), run by fgvc predict --onnx (needs pip install fgvc[onnx]).",
    )
    exp.add_argument("checkpoint", help="an fgvc .safetensors checkpoint")
    exp.add_argument("out", help="output folder; with --timm a .safetensors file; with --push a repo id "
                     "(user/repo); with --onnx a .onnx file")
    kind = exp.add_mutually_exclusive_group()
    kind.add_argument("--timm", action="store_true", help="write a timm state dict instead of a Hub folder")
    kind.add_argument("--push", action="store_true", help="upload to the Hugging Face Hub repository OUT")
    kind.add_argument("--onnx", action="store_true", help="write an ONNX file (onnxruntime; pip install fgvc[onnx])")
    exp.add_argument("--opset", type=int, default=None, help="with --onnx: the ONNX opset (default: the exporter's)")
    exp.add_argument("--private", action="store_true", help="with --push: create the repository as private")
    exp.set_defaults(func=_export)
