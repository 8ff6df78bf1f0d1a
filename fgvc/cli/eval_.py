"""``fgvc eval``: evaluate a checkpoint on a dataset split (``fgvc.studies.recipe.evaluate_checkpoint``)."""

from __future__ import annotations

import argparse


def _eval(args: argparse.Namespace) -> int:
    import json

    from ..studies.recipe import check_output_file, evaluate_checkpoint

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
    from ..engine.distributed import is_main_process

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
        help="folder for metrics.json, per_class_accuracy.csv, confusion_matrix.csv/.png, confused_pairs.csv and "
        "example images of the confused pairs (a path ending in .json: only the metrics, to that file)",
    )
    ev.add_argument(
        "--tta", default=None, choices=["hflip"],
        help="test-time augmentation: average with the mirror image (off by default; recorded in the results)",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)
