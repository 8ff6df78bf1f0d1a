"""``fgvc benchmark``: the cost of the methods beside the plain ViT (``fgvc.studies.benchmark``)."""

from __future__ import annotations

import argparse

from .common import _accuracies, _img_size


def _benchmark(args: argparse.Namespace) -> int:
    import torch

    from ..studies.benchmark import benchmark

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = benchmark(
        methods, backbone=args.backbone, img_sizes=args.img_size, batch_size=args.batch_size, device=device,
        num_classes=args.num_classes, backbone_kwargs=None if args.depth is None else dict(depth=args.depth),
        warmup=args.warmup, repeats=args.repeats, train=not args.no_train, memory=not args.no_memory,
        timm_reference=not args.no_timm, threads=args.threads, progress=not args.no_progress,
        selection=not args.no_selection, amp=None if args.amp == "fp32" else args.amp,
        grad_checkpointing=args.grad_checkpointing,
    )
    print(result.to_markdown())
    if args.accuracy and not args.out:
        print("note: --accuracy is plotted into --out; give --out DIR to get the figure")
    if args.out:
        paths = result.save(args.out, accuracies=args.accuracy)
        print("\nwritten: " + ", ".join(str(p) for p in paths))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``fgvc benchmark`` (``fgvc.studies.benchmark``)."""
    from ..studies.benchmark import DEFAULT_METHODS, GRAD_CHECKPOINTING, VARIANTS

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
        "--grad-checkpointing", choices=GRAD_CHECKPOINTING, default="off",
        help="activation checkpointing in the training step: off, on (every model, rows LABEL+ckpt) or both (each "
        "model without and with it, taking turns, and a table of the two: memory saved, time paid) "
        "(default: %(default)s)",
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
