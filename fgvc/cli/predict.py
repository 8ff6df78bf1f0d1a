"""``fgvc predict``: top classes with names for image files (``fgvc.engine.predict``)."""

from __future__ import annotations

import argparse


def _predict(args: argparse.Namespace) -> int:
    from ..engine.predict import expand_images, predict, save_predictions
    from ..storage.checkpoint import load_model
    from ..studies.recipe import test_transform_for
    from ..studies.report import save_maps

    images = expand_images(args.images)
    if args.onnx:
        return _predict_onnx(args, images)
    model = load_model(args.checkpoint)
    transform = test_transform_for(model, args.checkpoint)
    predictions = predict(model, images, topk=args.topk, transform=transform, device=args.device, tta=args.tta)
    for prediction in predictions:
        print(prediction)
    if args.out:
        info = dict(checkpoint=str(args.checkpoint), tta=args.tta)
        if getattr(model, "temperature", 1.0) != 1.0:  # calibrated (fgvc eval --save-calibrated)
            info["temperature"] = model.temperature
        path = save_predictions(predictions, args.out, info=info)
        print(f"{len(predictions)} predictions written to {path}")
    if args.maps:
        for path in save_maps(model, images, args.maps, transform=transform):
            print(f"maps: {path}")
    return 0


def _predict_onnx(args: argparse.Namespace, images: list[str]) -> int:
    """``fgvc predict --onnx FILE``: onnxruntime on an ``fgvc export --onnx`` file, no fgvc model built."""
    from ..engine.predict import predict_onnx, save_predictions
    from ..storage.onnx import OnnxModel

    unsupported = [flag for flag, value in (("--tta", args.tta), ("--maps", args.maps), ("--device", args.device))
                   if value]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)}: not with --onnx (the exported forward gives logits and boxes)")
    model = OnnxModel(args.onnx)
    predictions = predict_onnx(model, images, topk=args.topk)
    for prediction in predictions:
        print(prediction)
    if args.out:
        info = dict(onnx=str(args.onnx), tta=None)
        if model.temperature != 1.0:
            info["temperature"] = model.temperature
        path = save_predictions(predictions, args.out, info=info)
        print(f"{len(predictions)} predictions written to {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc predict``."""
    pred = sub.add_parser(
        "predict",
        help="top-5 classes with names for image files, folders or globs",
        description="Classifies images with an fgvc checkpoint and prints the top classes with their names "
        "(from the checkpoint) and probabilities (test transform: resize, center crop, the backbone's "
        "normalization; calibrated when the checkpoint has a temperature: fgvc eval --save-calibrated); --out "
        "writes them as CSV or JSON, --maps a figure of the maps and crop per image. --onnx FILE runs an "
        "fgvc export --onnx file with onnxruntime instead (its class names and test transform are in it).",
    )
    source = pred.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="an fgvc .safetensors checkpoint")
    source.add_argument("--onnx", metavar="FILE", help="an fgvc export --onnx file, run by onnxruntime")
    pred.add_argument(
        "images", nargs="+", help="image files, folders (every image below them) or quoted globs ('birds/**/*.jpg')"
    )
    pred.add_argument("--out", default=None, help="write the predictions to this .csv or .json file")
    pred.add_argument(
        "--tta", default=None, choices=["hflip"],
        help="test-time augmentation: average with the mirror image (off by default; recorded in --out)",
    )
    pred.add_argument("--topk", type=int, default=5, help="how many classes to show (default: %(default)s)")
    pred.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    pred.add_argument("--maps", default=None, metavar="DIR",
                      help="also save every attention map of each image as DIR/<name>_maps.png")
    pred.set_defaults(func=_predict)
