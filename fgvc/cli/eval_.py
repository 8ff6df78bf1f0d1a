"""``fgvc eval``: evaluate a checkpoint on a dataset split (``fgvc.studies.recipe.evaluate_checkpoint``)."""

from __future__ import annotations

import argparse


def _eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..studies.recipe import check_output_file, evaluate_checkpoint

    _check_calibration_arguments(args)
    as_file = args.out is not None and args.out.lower().endswith(".json")  # the old --out FILE.json
    if as_file:
        check_output_file(args.out, "the metrics")  # now, not after the whole evaluation
    elif args.out:
        _check_output_dir(args.out, "the evaluation report")
    if args.save_calibrated:
        check_output_file(args.save_calibrated, "the calibrated checkpoint")
    if args.hierarchy is not None and not Path(args.hierarchy).is_file():
        raise FileNotFoundError(f"--hierarchy {args.hierarchy}: no such file")
    if not args.part_radius > 0:
        raise ValueError(f"--part-radius {args.part_radius:g}: a positive number of grid cells")
    options = dict(batch_size=args.batch_size, device=args.device, num_workers=args.num_workers,
                   progress=not args.no_progress, tta=args.tta)
    if args.parts:
        options.update(parts=True, part_radius=args.part_radius)
    calibrated = None
    if args.calibrate is not None:  # the temperature first, on the validation split only
        calibrated, images = _calibrated_model(args, options)
        options.update(temperature=calibrated.temperature, calibrate=True)
    from ..engine.evaluate import NoPartsError

    try:
        result = evaluate_checkpoint(args.checkpoint, args.data, dataset=args.dataset, split=args.split,
                                     out_dir=None if as_file else args.out, hierarchy=args.hierarchy, **options)
    except NoPartsError:
        raise ValueError(f"--parts: the {args.split} split of {args.data or 'the run'} has no part locations (CUB "
                         "needs parts/parts.txt and parts/part_locs.txt; the synthetic data has one part, its "
                         "detail)") from None
    from ..engine.distributed import is_main_process

    if not is_main_process():  # under torchrun every rank evaluated its shard; rank 0 reports
        return 0
    summary = result.summary()
    if calibrated is not None:
        t = calibrated.temperature
        print(f"temperature {t:.4g} fitted on split {args.calibrate!r} ({images} images)")
        summary["calibrated_on"] = args.calibrate
    for key, value in summary.items():
        print(f"{key:>12}: {value:.4g}" if isinstance(value, float) else f"{key:>12}: {value}")
    print(f"{'images':>12}: {result.num_samples}")
    if result.tta:
        print(f"{'tta':>12}: {result.tta}")
    if result.parts is not None:
        print(result.parts_table())
    if as_file:
        with open(args.out, "w") as f:
            info = dict(num_samples=result.num_samples, tta=result.tta, checkpoint=str(args.checkpoint))
            json.dump(dict(summary, **info), f, indent=2)
    elif args.out:
        if calibrated is not None:  # the report says which split the temperature came from
            path = Path(args.out) / "metrics.json"
            metrics = dict(json.loads(path.read_text()), calibrated_on=args.calibrate)
            path.write_text(json.dumps(metrics, indent=2))
        parts = ", part scores (parts.md, parts.png)" if result.parts is not None else ""
        print(f"metrics, per-class accuracy, confusion matrix, reliability diagram{parts} and confused pairs in "
              f"{args.out}/")
    if calibrated is not None and args.save_calibrated:
        print(f"calibrated checkpoint (temperature {calibrated.temperature:.4g}): "
              f"{_save_calibrated(calibrated, args.checkpoint, args.save_calibrated)}")
    return 0


def _check_calibration_arguments(args: argparse.Namespace) -> None:
    """--calibrate names a split other than the evaluated one and never the test split; --save-calibrated
    needs it and never overwrites the checkpoint read."""
    import os

    from ..storage.checkpoint import run_config
    from ..studies.recipe import recipe_splits

    if args.save_calibrated and args.calibrate is None:
        raise ValueError("--save-calibrated needs --calibrate SPLIT (the validation split to fit the temperature)")
    if args.calibrate is None:
        return
    data = (run_config(args.checkpoint) or {}).get("data") or {}
    test_split = recipe_splits(data)[1] if data.get("dataset") else "test"
    if args.calibrate in {"test", test_split, args.split}:
        raise ValueError(f"--calibrate {args.calibrate}: the temperature is fitted on a validation split, never "
                         f"on the test split or the split evaluated; use --calibrate val")
    if args.save_calibrated:
        out = args.save_calibrated
        same = os.path.exists(out) and os.path.samefile(out, args.checkpoint)
        if same or os.path.abspath(out) == os.path.abspath(args.checkpoint):
            raise ValueError(f"--save-calibrated {out} is the checkpoint read: name a new file")
        if not args.save_calibrated.endswith(".safetensors"):
            raise ValueError(f"--save-calibrated {args.save_calibrated}: a checkpoint is a .safetensors file")


def _calibrated_model(args: argparse.Namespace, options: dict) -> tuple[object, int]:
    """The checkpoint's model with its temperature fitted on the split ``--calibrate`` names, and its size.

    ``val`` is the run's own validation split when a ``config.yaml`` is beside the checkpoint (carved from the
    training split with the run's seed and fraction, or the synthetic data's validation stream): the split the
    checkpoint was chosen on, never the test split. Any other name (or ``val`` without a run folder) is a
    split of the dataset folder, read as ``fgvc eval`` reads the evaluated one.
    """
    from ..engine.evaluate import calibrate, check_same_classes
    from ..storage.checkpoint import load_model, run_config
    from ..studies.recipe import build_recipe_data, checkpoint_split

    config = run_config(args.checkpoint)
    run_dataset = ((config or {}).get("data") or {}).get("dataset")
    own_run = config is not None and args.calibrate == "val" and args.dataset in (None, run_dataset)
    if own_run:
        model = load_model(args.checkpoint)
        recipe = dict(config, data=dict(config["data"], root=args.data))
        val = build_recipe_data(recipe, model).get("val")
        if val is None:
            raise ValueError(f"the run of {args.checkpoint} has no validation split (val_fraction 0 or "
                             f"protocol paper): name a split of the dataset with --calibrate SPLIT")
        check_same_classes(model, val, data_name=f"{args.data} (validation split)",
                           model_name=f"checkpoint {args.checkpoint}")
    else:
        model, val = checkpoint_split(args.checkpoint, args.data, dataset=args.dataset, split=args.calibrate)
    calibrate(model, val, **{k: v for k, v in options.items() if k != "temperature"})
    return model, len(val)


def _save_calibrated(model: object, checkpoint: str, out: str) -> str:
    """``model`` (the checkpoint's, with its temperature) saved to ``out`` with the checkpoint's other
    metadata (metrics, epoch); the run's config.yaml is copied beside it when that folder has none (it holds
    the test resize)."""
    import shutil
    from pathlib import Path

    from ..storage.checkpoint import read_metadata, save_model

    meta = read_metadata(checkpoint)
    own = set(model.config) | {"class_names", "fgvc_version", "format", "temperature"}
    path = save_model(model, out, extra={k: v for k, v in meta.items() if k not in own})
    config, target = Path(checkpoint).with_name("config.yaml"), path.with_name("config.yaml")
    if config.is_file() and not target.exists():
        shutil.copyfile(config, target)
    return str(path)


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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc eval``."""
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
        help="folder for metrics.json, per_class_accuracy.csv, confusion_matrix.csv/.png, reliability.png, "
        "confused_pairs.csv and example images of the confused pairs (a path ending in .json: only the metrics, to that file)",
    )
    ev.add_argument(
        "--tta", default=None, choices=["hflip"],
        help="test-time augmentation: average with the mirror image (off by default; recorded in the results)",
    )
    ev.add_argument(
        "--calibrate", default=None, metavar="SPLIT",
        help="fit a temperature on this split (val: the run's validation split, from the config.yaml beside "
        "the checkpoint; never test) and report ECE, NLL and Brier before and after temperature scaling",
    )
    ev.add_argument(
        "--save-calibrated", default=None, metavar="OUT.safetensors",
        help="with --calibrate: save the checkpoint with its temperature to this new file (fgvc predict then "
        "reports calibrated probabilities)",
    )
    ev.add_argument(
        "--hierarchy", default=None, metavar="FILE",
        help="also score the top-1 at coarser levels: a CSV (class,<level>,...) or JSON ({level: {class: coarse}}) "
        "mapping every class up (FGVC-Aircraft's family and manufacturer are scored without it)",
    )
    ev.add_argument(
        "--parts", action="store_true",
        help="also score where every map of the model looks against the data's part locations (CUB's parts/ "
        "files; the synthetic data's detail): per part, how often a map peaks near it and its mass there; with "
        "--out also parts.md and parts.png",
    )
    ev.add_argument("--part-radius", type=float, default=1.0, metavar="CELLS",
                    help="with --parts: 'near' is within this many grid cells (patch strides) of the part "
                    "(default: %(default)s)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)
