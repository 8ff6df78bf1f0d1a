"""Training cost of every method and option: images per second and peak memory of one training step.

``fgvc.benchmark`` with inference left out (same run, models taking turns run by run, medians with the range of
the runs, each ratio the median of the rounds' own ratios, the machine's load average stated). A training step
is forward, the method's loss, backward and an AdamW step; peak memory is that of the first step of a fresh
AdamW (gradients and optimizer state included) above what the idle model and its input hold. Rows: vit, glsim,
its cheaper crop passes (glsim_half, glsim_tokens with random-weight boxes, glsim_tokens_box50 on a centred box
of half of each side: see ``_fixed_box.py``), dcal (PWCA in all blocks, the paper's default), dcal_T6 (PWCA in
the last 6 blocks) and transfg. ``--methods`` measures a subset (a long run split in two keeps the ViT in each).

    OMP_NUM_THREADS=1 python benchmarks/training_cost.py --threads 1 --img-size 224 --out benchmarks/results/cpu_deit_tiny_training_224
"""

from __future__ import annotations

import argparse
import math

from _fixed_box import FIXED_BOX

import fgvc
from fgvc.studies.benchmark import BenchmarkResult

ROWS = {
    "glsim": "glsim",
    "glsim_half": "glsim_half",
    "glsim_half_pe": "glsim_half_pe",
    "glsim_tokens": "glsim_tokens",
    "glsim_tokens_box50": ("glsim_tokens_box50", FIXED_BOX, dict(crop_mode="tokens", box_side=0.5)),
    "dcal": "dcal",
    "dcal_T6": "dcal_T6",
    "transfg": "transfg",
}


def training_table(result: BenchmarkResult) -> str:
    """The training step as images/s (median and range), its ratio to the ViT and peak memory."""
    s = result.setup
    load = s["loadavg"]
    lines = [f"training step: {s['device_name']}, {s['threads']} torch threads, {s['backbone']} (random weights), "
             f"batch {s['batch_size']}, {s['amp']}, median (range) of {s['repeats']} runs after {s['warmup']} "
             f"warm-up, models taking turns; load average {load[0]:.2f} before, {load[1]:.2f} after "
             f"({s['cpus']} CPUs)", "",
             "| method | size | train img/s | step time x ViT | train GMACs x ViT | peak memory (MiB) | x ViT |",
             "|---|---|---|---|---|---|---|"]
    for r in result.rows:
        vit = next(v for v in result.rows if v.method == "vit" and v.img_size == r.img_size)
        mem = "-" if math.isnan(r.train_mem_mib) else f"{r.train_mem_mib:.0f}"
        mem_ratio = "-" if math.isnan(r.train_mem_mib) else f"{r.train_mem_mib / vit.train_mem_mib:.2f}"
        lines.append(f"| {r.method} | {r.img_size} | {r.train_throughput:.3g} ({r.train_throughput_lo:.3g}-"
                     f"{r.train_throughput_hi:.3g}) | {r.train_ratio:.2f} ({r.train_ratio_lo:.2f}-{r.train_ratio_hi:.2f})"
                     f" | {r.train_macs_ratio:.2f} | {mem} | {mem_ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="deit_tiny_patch16_224", help="timm ViT name (random weights)")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224], help="input sizes")
    parser.add_argument("--batch-size", type=int, default=4, help="images per step (at least 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", default=None, choices=[None, "bf16", "fp16"], help="autocast dtype")
    parser.add_argument("--methods", nargs="+", default=list(ROWS), choices=list(ROWS), help="rows besides vit")
    parser.add_argument("--out", default=None, help="folder for methods.csv, benchmark.md and training.md")
    args = parser.parse_args()
    result = fgvc.benchmark([ROWS[m] for m in args.methods], backbone=args.backbone, img_sizes=args.img_size,
                          batch_size=args.batch_size, device=args.device, repeats=args.repeats, warmup=args.warmup,
                          inference=False, selection=False, timm_reference=False, amp=args.amp, threads=args.threads,
                          progress=True)
    table = training_table(result)
    print(table)
    if args.out:
        paths = result.save(args.out)
        (paths[0].parent / "training.md").write_text(table + "\n")
        print("written: " + ", ".join(str(p) for p in paths) + f", {paths[0].parent / 'training.md'}")


if __name__ == "__main__":
    main()
