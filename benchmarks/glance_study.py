"""GLSim's glance where resolution decides: accuracy (``fgvc demo``'s runs) and cost, beside the plain ViT.

A synthetic setting whose detail is legible at the full input resolution and not at the glance's: the plain
ViT at full size (``vit``) and on the same pictures downscaled (``vit@SIZE``,
``fgvc.studies.demo.Downscaled``), official GLSim at full size, its half-size crop pass (``glsim_half_pe``)
and the glance variants. Every run is ``fgvc demo``'s (same data, schedule, seeds, shipped backbone), so the
budget is identical across methods. The table gives top-1 and crop IoU as mean +- std over the seeds and,
measured in one run with the models taking turns (``fgvc.studies.benchmark.timed_rounds``), inference and
training-step throughput as ratios to the full-size ViT (the median over rounds of the ratio within a round).
A ``@SIZE`` model's timed input is the full-size batch, downscaled inside the timed call, as it would be
deployed. Prints the verdict against the target (glance: >= 1.5x the ViT's inference throughput, top-1 >= the
ViT's and within 1 point of GLSim's) and writes everything to a JSON file.

    python benchmarks/glance_study.py --seeds 0,1,2   # the setting of docs/results.md
    python benchmarks/glance_study.py --methods vit,glsim_glance,glsim_g96 --seeds 0 \\
        --variant "glsim_g96 glance_size=96 crop_size=96 crop_pos_embed=learned" --json /tmp/g96.json

``--variant "glsim_NAME key=value ..."`` adds a named option set of a registered method for this run only (the
diagnostics: glance size, crop size, top-k, box rule, crop position embedding).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import timm
import torch

from fgvc.methods.base import create_model, list_models, model_class, resolve_method
from fgvc.settings import parse_value
from fgvc.studies.benchmark import timed_rounds
from fgvc.studies.demo import FULL, DemoSettings, downscale, mean_std, run_demo, split_input_size
from fgvc.version import __version__

#: The study's setting and methods (``--help`` shows them): detail and glance chosen from measured runs
#: (docs/results.md, "GLSim glance: accuracy where resolution decides").
SETTING = replace(FULL, img_size=128, detail_px=16)
METHODS = ("vit", "vit@64", "glsim", "glsim_half_pe", "glsim_glance", "glsim_glance_top2")
TARGET_SPEEDUP = 1.5  # the glance's inference throughput over the full-size ViT's, at least
TARGET_GAP = 1.0  # the glance's top-1 at most this many points below official GLSim's


@contextlib.contextmanager
def extra_variants(specs: Sequence[str]) -> Iterator[list[str]]:
    """Register ``"method_name key=value ..."`` option sets as variants of ``method`` for the duration
    (restored after); yields their names."""
    saved, names = {}, []
    try:
        for spec in specs:
            name, *pairs = spec.split()
            method = next((m for m in list_models() if name.startswith(m + "_")), None)
            if method is None:
                raise SystemExit(f"--variant {spec!r}: the name must be <method>_<something>, method one of "
                                 f"{', '.join(list_models())}")
            options = {}
            for pair in pairs:
                key, eq, value = pair.partition("=")
                if not eq:
                    raise SystemExit(f"--variant {spec!r}: expected key=value, got {pair!r}")
                options[key] = parse_value(value)
            cls = model_class(method)
            saved.setdefault(cls, cls.variants)
            cls.variants = {**cls.variants, name[len(method) + 1:]: options}
            names.append(name)
        yield names
    finally:
        for cls, variants in saved.items():
            cls.variants = variants


def _build(method: str, s: DemoSettings) -> tuple[torch.nn.Module, tuple[int, int] | None]:
    """The model ``fgvc demo`` trains for ``method`` (fresh new layers; cost does not depend on the weights)
    and the size its input is downscaled to (None: full size)."""
    name, size = split_input_size(method)
    registered, options = resolve_method(name)
    model_options = s.model_options() if size is None else {**s.model_options(), "img_size": size}
    torch.manual_seed(0)
    model = create_model(registered, num_classes=s.class_count, **model_options, **options)
    return model, None if size is None else (size, size)


def measure_throughput(methods: Sequence[str], s: DemoSettings, *, batch_size: int, repeats: int,
                       warmup: int) -> dict[str, dict[str, float]]:
    """Inference and training-step images/s of each method on one full-size batch, the methods taking turns
    each round; ratios to ``methods[0]`` (the full-size ViT) as the median over rounds of the within-round
    ratio."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, 3, s.img_size, s.img_size, generator=g)  # (B, 3, H, W)
    y = torch.randint(0, s.class_count, (batch_size,), generator=g)  # (B,)
    built = {m: _build(m, s) for m in methods}

    def infer(model: torch.nn.Module, size: tuple[int, int] | None) -> Any:
        model.eval()
        with torch.inference_mode():
            return model(x if size is None else downscale(x, size))

    def step_of(model: torch.nn.Module, size: tuple[int, int] | None) -> Any:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step() -> None:
            model.train()
            loss = model.loss(model(x if size is None else downscale(x, size)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    device = torch.device("cpu")
    inf = timed_rounds({m: (lambda m=m: infer(*built[m])) for m in methods}, device, repeats, warmup)
    train = timed_rounds({m: step_of(*built[m]) for m in methods}, device, repeats, warmup)
    base = methods[0]
    out = {}
    for m in methods:
        out[m] = dict(
            infer_images_per_s=batch_size / statistics.median(inf[m]),
            infer_ratio=statistics.median(b / t for b, t in zip(inf[base], inf[m], strict=True)),
            train_images_per_s=batch_size / statistics.median(train[m]),
            train_ratio=statistics.median(b / t for b, t in zip(train[base], train[m], strict=True)),
            infer_seconds=inf[m], train_seconds=train[m],
        )
    return out


def summarize(rows: list[dict[str, Any]], methods: Sequence[str],
              s: DemoSettings) -> dict[str, dict[str, Any]]:
    """Per method: input side, top-1 and crop IoU per seed, their mean and sample std."""
    out = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        top1 = [r["top1"] for r in mine]
        iou = [r["crop_iou"] for r in mine if r["crop_iou"] is not None]
        out[m] = dict(
            input_px=split_input_size(m)[1] or s.img_size, seeds=[r["seed"] for r in mine], top1=top1,
            top1_mean=statistics.mean(top1), top1_std=statistics.stdev(top1) if len(top1) > 1 else 0.0,
            crop_iou=iou or None, crop_iou_mean=statistics.mean(iou) if iou else None,
            pointing_game=[r["pointing_game"] for r in mine],
        )
    return out


def format_table(summary: dict[str, dict[str, Any]], speed: dict[str, dict[str, float]] | None,
                 reference: str = "vit") -> str:
    """Markdown: top-1 and crop IoU (mean +- std over seeds), throughput and its ratio to ``reference`` (the
    full-size ViT)."""
    ref = "ViT" if reference == "vit" else reference
    lines = [f"| method | input (px) | top-1 (%) | crop IoU | inference (img/s) | x {ref} "
             f"| training step (img/s) | x {ref} |", "|---|---|---|---|---|---|---|---|"]
    for m, r in summary.items():
        t = (speed or {}).get(m)
        cost = (f"{t['infer_images_per_s']:.0f} | {t['infer_ratio']:.2f}x | {t['train_images_per_s']:.0f} | "
                f"{t['train_ratio']:.2f}x") if t else "- | - | - | -"
        lines.append(f"| {m} | {r['input_px']} | {mean_std(r['top1'], '.1f')} | "
                     f"{mean_std(r['crop_iou'] or [], '.2f')} | {cost} |")
    return "\n".join(lines)


def verdict(summary: dict[str, dict[str, Any]], speed: dict[str, dict[str, float]] | None,
            vit: str = "vit", glsim: str = "glsim") -> dict[str, dict[str, Any]]:
    """Each glance variant against the target's three clauses (None where a needed row is missing; the
    speed-up only when the ratios are to ``vit``, the first method)."""
    out = {}
    to_vit = next(iter(summary), None) == vit
    for m, r in summary.items():
        if "glance" not in m:
            continue
        ratio = (speed or {}).get(m, {}).get("infer_ratio") if to_vit else None
        v, g = summary.get(vit), summary.get(glsim)
        out[m] = dict(
            speedup=ratio, speedup_ok=None if ratio is None else ratio >= TARGET_SPEEDUP,
            minus_vit=None if v is None else r["top1_mean"] - v["top1_mean"],
            top1_ok_vs_vit=None if v is None else r["top1_mean"] >= v["top1_mean"],
            minus_glsim=None if g is None else r["top1_mean"] - g["top1_mean"],
            top1_ok_vs_glsim=None if g is None else r["top1_mean"] >= g["top1_mean"] - TARGET_GAP,
        )
    return out


def _verdict_text(checks: dict[str, dict[str, Any]]) -> str:
    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else "met" if ok else "MISSED"

    lines = []
    for m, c in checks.items():
        sp = "-" if c["speedup"] is None else f"{c['speedup']:.2f}x"
        dv = "-" if c["minus_vit"] is None else f"{c['minus_vit']:+.1f}"
        dg = "-" if c["minus_glsim"] is None else f"{c['minus_glsim']:+.1f}"
        lines.append(f"{m}: inference {sp} the ViT's (>= {TARGET_SPEEDUP}x: {mark(c['speedup_ok'])}); "
                     f"top-1 {dv} vs the ViT (>= 0: {mark(c['top1_ok_vs_vit'])}), "
                     f"{dg} vs GLSim (>= -{TARGET_GAP:g}: {mark(c['top1_ok_vs_glsim'])})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated; the first is the ratios' "
                   "reference (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--img-size", type=int, default=SETTING.img_size)
    p.add_argument("--detail-px", type=int, default=SETTING.detail_px)
    p.add_argument("--vocabulary", default="", help="comma-separated class names (default: the grid)")
    p.add_argument("--num-classes", type=int, default=SETTING.num_classes)
    p.add_argument("--train", type=int, default=SETTING.train)
    p.add_argument("--val", type=int, default=SETTING.val)
    p.add_argument("--test", type=int, default=SETTING.test)
    p.add_argument("--epochs", type=int, default=SETTING.epochs)
    p.add_argument("--threads", type=int, default=SETTING.threads, help="CPU threads (default: %(default)s)")
    p.add_argument("--variant", action="append", default=[], help='"glsim_NAME key=value ..." (repeatable)')
    p.add_argument("--batch-size", type=int, default=32, help="timed batch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-timing", action="store_true", help="accuracy only")
    p.add_argument("--no-train", action="store_true", help="cost only (no runs)")
    p.add_argument("--out", default="/tmp/fgvc_glance_study", help="the runs' folder (default: %(default)s)")
    p.add_argument("--json", default="benchmarks/results/glance_study.json", help="default: %(default)s")
    args = p.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    vocabulary = tuple(v for v in args.vocabulary.split(",") if v)
    with extra_variants(args.variant):  # the settings' method check sees them
        s = DemoSettings.from_mapping(dict(
            img_size=args.img_size, detail_px=args.detail_px, vocabulary=vocabulary,
            num_classes=args.num_classes, train=args.train, val=args.val, test=args.test, epochs=args.epochs,
            methods=tuple(methods), threads=args.threads),
            base=SETTING)
        torch.set_num_threads(s.threads)
        rows = [] if args.no_train else run_demo(settings=s, seeds=seeds, out_dir=args.out, workers=1,
                                                 progress=False)
        speed = None
        if not args.no_timing:
            print(f"timing {', '.join(methods)}: batch {args.batch_size}, {args.repeats} rounds after "
                  f"{args.warmup}, {s.threads} threads", flush=True)
            with torch.random.fork_rng():
                speed = measure_throughput(methods, s, batch_size=args.batch_size, repeats=args.repeats,
                                           warmup=args.warmup)
    summary = summarize(rows, methods, s) if rows else {
        m: dict(input_px=split_input_size(m)[1] or s.img_size, top1=[], crop_iou=None, top1_mean=float("nan"))
        for m in methods}
    table = format_table(summary, speed, methods[0])
    checks = verdict(summary, speed) if rows else {}
    print(f"\nmean +- std over seeds {', '.join(map(str, seeds))}; throughput ratios to {methods[0]} "
          "in one run:\n")
    print(table)
    if checks:
        print("\n" + _verdict_text(checks))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        command="python benchmarks/glance_study.py " + " ".join(sys.argv[1:] if argv is None else argv),
        settings=asdict(s), seeds=seeds, variants=args.variant, results=rows, summary=summary,
        throughput=speed,
        timing=dict(batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup, threads=s.threads),
        verdict=checks, table=table,
        versions=dict(fgvc=__version__, torch=torch.__version__, timm=timm.__version__,
                      python=platform.python_version(), machine=platform.machine()),
    ), indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
