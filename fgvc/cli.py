"""The ``fgvc`` command (also ``python -m fgvc``): the only place that parses arguments."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

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


def _pretrain(args: argparse.Namespace) -> int:
    from dataclasses import fields, replace

    from .pretrain import PretrainSettings, pretrain

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


def _data_check(args: argparse.Namespace) -> int:
    from .data import check_dataset

    options = {} if args.annotation_level is None else {"annotation_level": args.annotation_level}
    report = check_dataset(args.dataset, args.root, quick=args.quick, progress=not args.no_progress, **options)
    print(report)
    return 0 if report.ok else 1


def _train(args: argparse.Namespace) -> int:
    from .recipe import load_recipe, train_recipe

    recipe = load_recipe(args.config, args.set or ())
    out = args.out or f"runs/{recipe.get('name') or 'run'}"
    options: dict = {"progress": not args.no_progress}
    if args.device is not None:
        options["device"] = args.device
    if args.resume:
        options["resume"] = True
    if args.overwrite:
        options["overwrite"] = True
    result = train_recipe(recipe, out, seeds=args.seeds, sweep=args.sweep, **options)
    from .distributed import is_main_process

    if not is_main_process():
        return 0
    print(result.to_markdown())
    print(f"runs, checkpoints and results in {out}/")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from .recipe import check_output_file, evaluate_checkpoint

    as_file = args.out is not None and args.out.lower().endswith(".json")  # the old --out FILE.json
    if as_file:
        check_output_file(args.out, "the metrics")  # now, not after the whole evaluation
    elif args.out:
        _check_output_dir(args.out, "the evaluation report")
    result = evaluate_checkpoint(
        args.checkpoint, args.data, dataset=args.dataset, split=args.split, batch_size=args.batch_size,
        device=args.device, num_workers=args.num_workers, progress=not args.no_progress, tta=args.tta,
        out_dir=None if as_file else args.out,
    )
    from .distributed import is_main_process

    if not is_main_process():  # under torchrun every rank evaluated its shard; rank 0 reports
        return 0
    summary = result.summary()
    for key, value in summary.items():
        print(f"{key:>12}: {value:.4g}")
    print(f"{'images':>12}: {result.num_samples}")
    if result.tta:
        print(f"{'tta':>12}: {result.tta}")
    if as_file:
        with open(args.out, "w") as f:
            info = dict(num_samples=result.num_samples, tta=result.tta, checkpoint=str(args.checkpoint))
            json.dump(dict(summary, **info), f, indent=2)
    elif args.out:
        print(f"metrics, per-class accuracy, confusion matrix and confused pairs in {args.out}/")
    return 0


def _check_output_dir(path: str, what: str) -> None:
    """Create the output folder now (not after a long evaluation), or say why it cannot be."""
    import tempfile
    from pathlib import Path

    if Path(path).exists() and not Path(path).is_dir():
        raise NotADirectoryError(f"cannot write {what} to {path}: it is a file, not a folder")
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a real write: os.access says yes to root even in /proc
            pass
    except OSError as err:
        raise PermissionError(f"cannot write {what} to {path}: {err.strerror or err}") from None


def _predict(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .predict import expand_images, predict, save_maps, save_predictions
    from .recipe import test_transform_for

    images = expand_images(args.images)
    model = load_model(args.checkpoint)
    transform = test_transform_for(model, args.checkpoint)
    predictions = predict(model, images, topk=args.topk, transform=transform, device=args.device, tta=args.tta)
    for prediction in predictions:
        print(prediction)
    if args.out:
        path = save_predictions(predictions, args.out, info=dict(checkpoint=str(args.checkpoint), tta=args.tta))
        print(f"{len(predictions)} predictions written to {path}")
    if args.maps:
        for path in save_maps(model, images, args.maps, transform=transform):
            print(f"maps: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """``fgvc export``: a Hub folder (save_pretrained), a plain timm state dict (--timm), or an upload (--push)."""
    from .checkpoint import load_model
    from .hub import checkpoint_card_info, export_timm, push_to_hub, save_pretrained

    model = load_model(args.checkpoint)
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


def _convert(args: argparse.Namespace) -> int:
    """``fgvc convert IN OUT``: an official GLSim / TransFG checkpoint as an fgvc ``.safetensors``."""
    from .checkpoint import load_model, save_model

    model = load_model(args.input, format=args.format)
    path = save_model(model, args.output, extra=dict(converted_from=str(args.input)))
    options = ", ".join(f"{k}={v}" for k, v in model.config["options"].items())
    h, w = model.img_size
    print(f"{model.method} ({options or 'default options'}) on {model.config['backbone']} "
          f"{model.config['backbone_kwargs']}, {h}x{w} px, {model.num_classes} classes -> {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    """``fgvc list [WHAT]``: methods (with their options), recipes, datasets, shipped weights, timm backbones."""
    import fnmatch

    from .data import list_datasets
    from .methods.base import BASELINE, list_models, model_options
    from .recipe import list_recipes

    common = set(model_options(BASELINE))  # the baseline has the common options only
    sections: dict[str, list[str]] = {
        "methods": [
            m + ("  (" + ", ".join(o for o in model_options(m) if o not in common) + ")" if set(model_options(m)) - common else "")
            for m in list_models()
        ],
        "recipes": list_recipes(),
        "datasets": list_datasets(),
        "weights": _shipped_weights(),
    }
    if args.what == "backbones":
        import timm

        sections = {"backbones": timm.list_models(args.filter or "*vit*")}
    elif args.what is not None:
        sections = {args.what: sections[args.what]}
    for name, items in sections.items():
        if args.filter and name != "backbones":
            items = [i for i in items if fnmatch.fnmatch(i.split()[0], args.filter)]
        print(f"{name} ({len(items)}):")
        for item in items or ["(none)"]:
            print(f"  {item}")
    return 0


def _shipped_weights() -> list[str]:
    """Names of the pretrained weights fgvc ships, where such a registry exists in this version."""
    try:
        from . import weights  # type: ignore[attr-defined]
    except ImportError:
        return []
    lister = getattr(weights, "list_shipped", None) or getattr(weights, "list_weights", None)
    return list(lister()) if callable(lister) else []


def _img_size(text: str) -> int | tuple[int, int]:
    """``448`` -> 448; ``448x336`` -> (448, 336) (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW (e.g. 448 or 448x336), got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _integers(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (at least one integer)."""
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        numbers = []
    if not numbers:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (e.g. 0,1,2), got {text!r}")
    return numbers


def _seed_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2], none repeated (a repeated seed would count twice in the mean +- std)."""
    seeds = _integers(text)
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers without repeats, got {text!r}")
    return seeds


def _accuracies(text: str) -> dict[str, float]:
    """``vit=83.5,glsim@448=86.1`` -> {"vit": 83.5, "glsim@448": 86.1}."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(
                f"accuracies are METHOD=TOP1 pairs (e.g. vit=83.5,glsim=85.1), got {item!r}"
            )
    return out


def _benchmark(args: argparse.Namespace) -> int:
    import torch

    from .profile import profile

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = profile(
        methods, backbone=args.backbone, img_sizes=args.img_size, batch_size=args.batch_size, device=device,
        num_classes=args.num_classes, backbone_kwargs=None if args.depth is None else dict(depth=args.depth),
        warmup=args.warmup, repeats=args.repeats, train=not args.no_train, memory=not args.no_memory,
        timm_reference=not args.no_timm, threads=args.threads, progress=not args.no_progress,
        selection=not args.no_selection, amp=None if args.amp == "fp32" else args.amp,
    )
    print(result.to_markdown())
    if args.accuracy and not args.out:
        print("note: --accuracy is plotted into --out; give --out DIR to get the figure")
    if args.out:
        paths = result.save(args.out, accuracies=args.accuracy)
        print("\nwritten: " + ", ".join(str(p) for p in paths))
    return 0


def _add_benchmark_command(sub: argparse._SubParsersAction) -> None:
    """``fgvc benchmark`` (``fgvc.profile``)."""
    from .profile import DEFAULT_METHODS, VARIANTS

    bench = sub.add_parser(
        "benchmark",
        help="cost of the methods beside the plain ViT: parameters, MACs, throughput, training step, memory, "
        "selection share",
        description="Measures every method on one backbone (random weights) at each input size, in one run, "
        "with ratios to the plain ViT of the same run and timm's own model timed beside it: parameters, MACs "
        "per image (FlopCounterMode, math attention), inference images/s and training-step time (medians, the "
        "models taking turns), peak memory above the idle model (CUDA max allocated; CPU: process RSS), and "
        "each method's selection step as a share of one encoder forward. Prints markdown tables; --out writes "
        "CSV, markdown and (with --accuracy) an accuracy-against-throughput plot.",
    )
    bench.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated methods or variants ({', '.join(VARIANTS)}); the plain ViT is always measured "
        f"(default: %(default)s)",
    )
    bench.add_argument(
        "--backbone", default="deit_tiny_patch16_224", help="timm ViT name, random weights (default: %(default)s)"
    )
    bench.add_argument("--depth", type=int, default=None, help="override the backbone's number of blocks (quick runs)")
    bench.add_argument(
        "--img-size", type=_img_size, nargs="+", default=[224, 448],
        help="input sizes, N or HxW (default: 224 448)",
    )
    bench.add_argument(
        "--batch-size", type=int, default=2, help="images per timed batch, at least 2 (default: %(default)s)"
    )
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    bench.add_argument(
        "--num-classes", type=int, default=200, help="classes of the heads (default: %(default)s, as CUB)"
    )
    bench.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default: %(default)s)")
    bench.add_argument(
        "--repeats", type=int, default=3, help="timed runs; the median is reported (default: %(default)s)"
    )
    bench.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads for the run (default: torch's setting)"
    )
    bench.add_argument("--no-train", action="store_true", help="skip the training step (time and MACs)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    bench.add_argument("--no-timm", action="store_true", help="do not time timm's own model beside fgvc's vit")
    bench.add_argument("--no-selection", action="store_true", help="skip the selection-step table")
    bench.add_argument(
        "--amp", choices=("fp32", "bf16", "fp16"), default="fp32",
        help="run inference and the training step under torch.autocast to this dtype (default: %(default)s)",
    )
    bench.add_argument(
        "--out", default=None, help="folder for methods.csv, selection.csv, benchmark.md (and the plot)"
    )
    bench.add_argument(
        "--accuracy", type=_accuracies, default=None,
        help="top-1 accuracies to plot against throughput, METHOD=TOP1 or METHOD@SIZE=TOP1, comma-separated "
        "(e.g. vit=83.5,glsim@448=86.1); written to --out as accuracy_vs_throughput.png",
    )
    bench.add_argument("--no-progress", action="store_true", help="do not print what is being measured")
    bench.set_defaults(func=_benchmark)


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    """``fgvc train``, ``fgvc eval`` and ``fgvc predict``."""
    from .recipe import list_recipes

    train = sub.add_parser(
        "train",
        help="train a recipe (YAML) once per seed; test evaluated once (protocol val or paper)",
        description="Trains the recipe's model on its dataset once per seed (fgvc.train_recipe). Each run "
        "goes to OUT/seed<N>/ (best.safetensors chosen on the validation split, last.safetensors, "
        "config.yaml with the resolved settings and the fgvc / torch / timm versions and git commit); the test "
        "split is evaluated once per run with the chosen checkpoint; OUT/results.md has every seed, the "
        "mean +- std and the paper's number, compared only under --set protocol=paper (whole training split, "
        "final checkpoint; the default protocol val chooses on a held-out 10%). Under torchrun (torchrun --nproc_per_node=N -m fgvc train ...) "
        "each process trains its share of every batch.",
    )
    train.add_argument(
        "--config",
        required=True,
        help="a recipe YAML file, or the name of a shipped one: " + ", ".join(list_recipes()[:4]) + ", ... "
        "(fgvc/recipes/)",
    )
    train.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help="override recipe values, dotted keys, YAML values: --set data.root=/data/CUB_200_2011 "
        "train.lr=0.001 train.batch_size=32 (train.* keys: the options of fgvc.TrainConfig)",
    )
    train.add_argument("--out", default=None, help="output folder (default: runs/<recipe name>)")
    train.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2,...",
        help="choose a setting on the validation split first: --sweep train.lr=0.03,0.01,0.003,0.001 trains each "
        "value (first seed, protocol val, OUT/sweep/), keeps the best validation top-1 (ties: the first listed), "
        "then trains and tests only that one; results.md / results.json list every candidate (repeat --sweep "
        "for a grid)",
    )
    train.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run (default: the recipe's)")
    train.add_argument(
        "--resume", action="store_true", help="continue each seed's run from its last checkpoint in OUT"
    )
    train.add_argument(
        "--overwrite", action="store_true",
        help="replace the runs already in OUT (their checkpoints, logs and results are deleted); without it a "
        "seed folder holding a run is refused",
    )
    train.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset split (top-1/5, retrieval, crop IoU)",
        description="Loads an fgvc checkpoint and evaluates it on a split of a dataset folder: top-1, top-5, "
        "retrieval Recall@1/5 and mAP of the embeddings, and the crop IoU where the dataset has boxes. The "
        "dataset name and resize are read from the config.yaml that fgvc train writes beside the checkpoint; "
        "--dataset overrides it.",
    )
    ev.add_argument("--checkpoint", required=True, help="an fgvc .safetensors checkpoint")
    ev.add_argument("--data", required=True, help="the dataset folder (e.g. data/CUB_200_2011)")
    ev.add_argument("--dataset", default=None, help="dataset layout (cub, cars, aircraft, nabirds, folder)")
    ev.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    ev.add_argument("--batch-size", type=int, default=64, help="batch size (default: %(default)s)")
    ev.add_argument("--num-workers", type=int, default=0, help="data-loading workers (default: %(default)s)")
    ev.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    ev.add_argument(
        "--out", default=None,
        help="folder for metrics.json, per_class_accuracy.csv, confusion_matrix.csv/.png, confused_pairs.csv and "
        "example images of the confused pairs (a path ending in .json: only the metrics, to that file)",
    )
    ev.add_argument(
        "--tta", default=None, choices=["hflip"],
        help="test-time augmentation: average with the mirror image (off by default; recorded in the results)",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)

    pred = sub.add_parser(
        "predict",
        help="top-5 classes with names for image files, folders or globs",
        description="Classifies images with an fgvc checkpoint and prints the top classes with their names "
        "(from the checkpoint) and probabilities (test transform: resize, center crop, the backbone's "
        "normalization); --out writes them as CSV or JSON, --maps a figure of the maps and crop per image.",
    )
    pred.add_argument("--checkpoint", required=True, help="an fgvc .safetensors checkpoint")
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


def build_parser() -> argparse.ArgumentParser:
    from .demo import FULL, HARD
    from .version import __version__

    parser = _Parser(
        prog="fgvc", description="Fine-grained visual categorization with vision transformers."
    )
    parser.add_argument("--version", action="version", version=f"fgvc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
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

    from .pretrain import PretrainSettings

    defaults = PretrainSettings()
    pre = sub.add_parser(
        "pretrain",
        help="re-create fgvc's shipped backbone: pretraining on synthetic data (CPU, about an hour)",
        description="Pretrains fgvc_synth_vit_tiny on synthetic fine-grained data whose classes are disjoint "
        "from the demo's, with a CLS classification loss and a localization loss on the CLS-patch similarity "
        "(see fgvc/pretrain.py). Writes the weights, a model card and log.jsonl.",
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
    _add_run_commands(sub)
    _add_benchmark_command(sub)
    _add_list_command(sub)
    _add_export_command(sub)
    _add_convert_command(sub)
    _add_debug_flag(parser)
    return parser


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    """``fgvc export``."""
    exp = sub.add_parser(
        "export",
        help="a checkpoint as a Hugging Face folder (model card), a plain timm state dict, or a Hub upload",
        description="Writes an fgvc checkpoint for use elsewhere. Default: a folder with model.safetensors, "
        "config.json (with the timm-style pretrained_cfg) and a README.md model card (the dataset and test "
        "metrics of the run when fgvc train wrote it), read back by fgvc.from_pretrained. --timm: the backbone "
        "(and the plain vit's classifier) as a .safetensors that timm.create_model(name, checkpoint_path=...) "
        "loads. --push: upload the folder to the Hub repository OUT (user/repo).",
    )
    exp.add_argument("checkpoint", help="an fgvc .safetensors checkpoint")
    exp.add_argument("out", help="output folder; with --timm a .safetensors file; with --push a repo id (user/repo)")
    kind = exp.add_mutually_exclusive_group()
    kind.add_argument("--timm", action="store_true", help="write a timm state dict instead of a Hub folder")
    kind.add_argument("--push", action="store_true", help="upload to the Hugging Face Hub repository OUT")
    exp.add_argument("--private", action="store_true", help="with --push: create the repository as private")
    exp.set_defaults(func=_export)


def _add_convert_command(sub: argparse._SubParsersAction) -> None:
    """``fgvc convert``."""
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
        "--format", default=None, choices=["glsim-official", "transfg-official"],
        help="the input's format (default: detected from its keys)",
    )
    conv.set_defaults(func=_convert)


def _add_list_command(sub: argparse._SubParsersAction) -> None:
    """``fgvc list``."""
    lst = sub.add_parser(
        "list",
        help="methods (with their options), recipes, datasets, shipped weights; or timm backbones",
        description="Lists what fgvc offers: methods with their own options, the shipped recipes, the datasets "
        "and shipped weights. 'fgvc list backbones' lists timm's ViT models (--filter '*eva02*').",
    )
    lst.add_argument(
        "what", nargs="?", default=None, choices=["methods", "recipes", "datasets", "weights", "backbones"],
        help="one section only (default: all but backbones)",
    )
    lst.add_argument("--filter", default=None, help="shell-style pattern, e.g. 'glsim_*' or '*dinov2*'")
    lst.set_defaults(func=_list)


def _add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after any (sub)command too; SUPPRESS keeps a subcommand from resetting ``fgvc --debug``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if "--debug" not in child._option_string_actions:
                    child.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback"
                    )
                _add_debug_flag(child)


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped subcommand or choice."""

    def error(self, message: str) -> Any:
        import re

        from .hints import did_you_mean

        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            choices = re.findall(r"'?([\w.-]+)'?", match.group(2))
            message += did_you_mean(match.group(1), choices)
        super().error(message)


def describe_error(err: BaseException) -> str:
    """One line saying what went wrong and, where fgvc knows it, how to fix it."""
    chain, seen = [], err
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {type(e).__name__ for e in chain}
    if names & {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "RepositoryNotFoundError", "HfHubHTTPError"} or any(
        "huggingface.co" in str(e) for e in chain
    ):
        offline = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") else ""
        return (
            f"could not download pretrained weights from the Hugging Face Hub{offline}: set model.pretrained=false "
            "and model.checkpoint_path=FILE (a local .pth, .npz or .safetensors) with --set, or go online "
            "(timm caches the weights after one download)"
        )
    if isinstance(err, KeyError):
        text = f"missing key {err}"
    elif isinstance(err, FileNotFoundError) and err.filename and err.errno is not None:  # raised by the OS
        from .hints import similar_files

        text = f"file not found: {err.filename}{similar_files(err.filename)}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; an error prints ``fgvc: error: ...`` on one line and returns 1 (``--debug``,
    or ``FGVC_DEBUG=1``: the traceback instead)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("fgvc: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug or os.environ.get("FGVC_DEBUG", "0") not in ("0", ""):
            raise
        print(f"fgvc: error: {describe_error(err)} (--debug shows the traceback)", file=sys.stderr)
        return 1


